"""Everything a person sees: the PySide6 + pyqtgraph window over the engine's background thread."""
