"""The live side: the engine thread (a latest-wins slot, lockstep frames), sources and streams,
the typed events it sends, and the running metrics a window shows."""
