"""'This is…': a person names the true class of what a live source shows (a banana held to the
camera), with type-to-search over the profile's classes. The frames that follow count towards the
running accuracy and the confusion matrix until the name is cleared."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QCompleter, QHBoxLayout, QLabel, QToolButton, QWidget

NOBODY = "\u2013 not named \u2013"


class LabelPicker(QWidget):
    label_chosen = Signal(object)  # a class index, or None to stop

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.box = QComboBox(self)
        self.box.setEditable(True)
        self.box.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.box.setMinimumContentsLength(14)
        self.box.setToolTip("Name what the camera or video shows: the frames that follow count towards the "
                            "running accuracy and the confusion matrix, until you clear it")
        self.box.activated.connect(self._chosen)
        self.clear_button = QToolButton(self)
        self.clear_button.setText("\u00d7")
        self.clear_button.setToolTip("Stop naming the class")
        self.clear_button.clicked.connect(lambda: self.set_classes(self.classes))
        self.classes: tuple[str, ...] = ()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 6, 0)
        layout.addWidget(QLabel("This is", self))
        layout.addWidget(self.box)
        layout.addWidget(self.clear_button)

    def set_classes(self, classes: tuple[str, ...]) -> None:
        """A new line-up's classes; the name given so far is dropped."""
        self.classes = tuple(classes)
        self.box.blockSignals(True)
        self.box.clear()
        self.box.addItems([NOBODY, *self.classes])
        completer = QCompleter(list(self.classes), self.box)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)  # "ban" finds "banana"
        completer.activated.connect(self.choose)
        self.box.setCompleter(completer)
        self.box.setCurrentIndex(0)
        self.box.blockSignals(False)
        self.label_chosen.emit(None)

    def choose(self, name: str) -> None:
        index = self.box.findText(name, Qt.MatchFlag.MatchExactly)
        if index >= 0:
            self.box.setCurrentIndex(index)
            self._chosen(index)

    def _chosen(self, index: int) -> None:
        self.label_chosen.emit(index - 1 if index > 0 else None)
