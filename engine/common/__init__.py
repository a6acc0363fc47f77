"""Small pure helpers every room uses: files written whole, numbers in words, errors in one line,
the app's settings from the environment, and one timing protocol."""
