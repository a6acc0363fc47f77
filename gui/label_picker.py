"""'This is…': a person names the true class of what a live source shows (a banana held to the
camera), with type-to-search over the profile's classes. The frames that follow count towards the
running accuracy and the confusion matrix until the name is cleared.

A name belongs to the source it was given for: a new source starts unnamed. Where the source names
its own classes (the CIFAR-10 test set, a folder of class-named folders) the box is disabled and
says why. After a name is chosen the box gives the keyboard back: Space plays and pauses again.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtWidgets import QComboBox, QCompleter, QHBoxLayout, QLabel, QToolButton, QWidget

NOBODY = "\u2013 not named \u2013"
TIP = ("Name what the camera or video shows: the frames that follow count towards the running accuracy and the "
       "confusion matrix, until you clear it or open another source")
OWN_LABELS_TIP = "This source names its own classes (the data set, or its class-named folders): nothing to name here"


class LabelPicker(QWidget):
    label_chosen = Signal(object)  # a class index, or None to stop

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.box = QComboBox(self)
        self.box.setEditable(True)
        self.box.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.box.setMinimumContentsLength(14)
        self.box.setToolTip(TIP)
        # never the focus the window starts with or tabs to: an editable box takes Space as text
        self.box.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.box.installEventFilter(self)  # focus comes to the box, keys to its line edit
        self.box.lineEdit().installEventFilter(self)
        self.box.activated.connect(self._chosen)
        self.clear_button = QToolButton(self)
        self.clear_button.setText("\u00d7")
        self.clear_button.setToolTip("Stop naming the class")
        self.clear_button.clicked.connect(self.clear)
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

    @property
    def chosen(self) -> int | None:
        index = self.box.currentIndex()
        return index - 1 if index > 0 else None

    def clear(self) -> None:
        """Unnamed (a new source): says so to the engine when a name was given."""
        if self.box.currentIndex() != 0:
            self.box.setCurrentIndex(0)
            self.label_chosen.emit(None)

    def set_source_labelled(self, labelled: bool) -> None:
        """A new source: unnamed; disabled, with the reason as its tooltip, where it has labels of its own."""
        self.clear()
        self.box.setEnabled(not labelled)
        self.clear_button.setEnabled(not labelled)
        self.setToolTip(OWN_LABELS_TIP if labelled else "")
        self.box.setToolTip(OWN_LABELS_TIP if labelled else TIP)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.KeyPress and event.key() == Qt.Key.Key_Escape:
            self._give_back_focus()
            return True
        if event.type() == QEvent.Type.FocusIn and self.box.currentIndex() == 0:
            self.box.lineEdit().clear()  # typing starts a name, not after "– not named –"
        return False

    def _give_back_focus(self) -> None:
        """Typing is over: the window's shortcuts (Space, the arrows) work again."""
        self.box.lineEdit().setText(self.box.currentText())
        self.box.clearFocus()

    def choose(self, name: str) -> None:
        index = self.box.findText(name, Qt.MatchFlag.MatchExactly)
        if index >= 0:
            self.box.setCurrentIndex(index)
            self._chosen(index)

    def _chosen(self, index: int) -> None:
        self.label_chosen.emit(index - 1 if index > 0 else None)
        self._give_back_focus()
