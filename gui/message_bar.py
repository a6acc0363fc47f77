"""An error that needs the person to act, shown whole above the panels with what to do about it.

The status bar holds one line, cut at the window's width ("stopped sending frames (…" at 1366
pixels), and the next frame's line replaced it. This bar wraps the whole text, adds the fix the
window knows for that kind of error, and stays until it is closed or a new source is opened.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QSizePolicy, QToolButton, QWidget

from engine.api import ErrorCode
from gui import style

# What to do, for the errors whose own text says what went wrong but not how to go on.
FIXES = {
    ErrorCode.SOURCE: "Open another source (Image\u2026, Folder\u2026, Video\u2026, Stream\u2026), or check that this "
                      "one exists and can be read; a live source that stopped: reconnect it and press Play (Space).",
    ErrorCode.CAMERA: "Try another index (Camera\u2026), or check that no other program uses the camera.",
    ErrorCode.WEIGHTS: "Choose a checkpoint written for this network (Change \u25b8 Load weights\u2026), or go back "
                       "to its default weights (Change \u25b8 Use the default weights).",
    ErrorCode.DOWNLOAD: "Check the network connection and try again (Change \u25b8 Download weights); or download "
                        "the file yourself and load it with Change \u25b8 Load weights\u2026.",
    ErrorCode.DEVICE: "Choose the CPU in the device box, or free the GPU's memory and choose it again.",
    ErrorCode.SESSION: "Choose another setting in the toolbar (profile, device, number format, backend); "
                       "the line above says which one failed.",
    ErrorCode.CAPTURE: "Choose another layer in the panel's Layer box.",
}


def with_fix(text: str, code: ErrorCode | None) -> str:
    fix = FIXES.get(code) if code is not None else None
    return f"{text}\n{fix}" if fix else text


class MessageBar(QFrame):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("messageBar")
        self.setStyleSheet(f"#messageBar {{ border: 1px solid {style.BAD}; border-radius: 4px; }}")
        self.text = QLabel("", self)
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # wraps to the window's width, never widens it
        self.text.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.close_button = QToolButton(self)
        self.close_button.setText("\u00d7")
        self.close_button.setToolTip("Close this message")
        self.close_button.clicked.connect(self.dismiss)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 4, 4)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.close_button, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_message(self, text: str) -> None:
        self.text.setText(text)
        self.show()

    def dismiss(self) -> None:
        self.text.setText("")
        self.hide()
