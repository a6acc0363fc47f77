"""Small pure helpers every room uses: files written whole, numbers in words."""
