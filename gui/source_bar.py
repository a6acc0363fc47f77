"""The toolbar: where frames come from, play/pause/step, profile, device, feature-map scale.

It asks the person (file dialogs, camera index, stream address), turns the answer into a source
target the engine understands, and emits it; it never talks to the engine itself. Dropped files and
pasted images arrive here too (:func:`target_from_paths`, :func:`qimage_to_rgb`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtGui import QAction, QGuiApplication, QImage, QKeySequence
from PySide6.QtWidgets import QComboBox, QFileDialog, QInputDialog, QLabel, QMessageBox, QStyle, QToolBar, QWidget

from engine.api import (
    CIFAR10_BYTES,
    IMAGE_SUFFIXES,
    PRECISIONS,
    PROFILES,
    VIDEO_SUFFIXES,
    backend_choices,
    backends,
    cifar10_archive_path,
    describe,
    display_name,
    is_image_path,
    one_line,
    redact_url,
)

IMAGE_FILTER = "Images (" + " ".join(f"*{s}" for s in sorted(IMAGE_SUFFIXES)) + ");;All files (*)"
VIDEO_FILTER = "Videos (" + " ".join(f"*{s}" for s in sorted(VIDEO_SUFFIXES)) + ");;All files (*)"
CIFAR_FILTER = "CIFAR-10 archive: cifar-10-python.tar.gz, or class folders (*.tar.gz *.tgz *.tar);;All files (*)"


def qimage_to_rgb(image: QImage) -> np.ndarray:
    """An (H, W, 3) uint8 RGB copy of ``image`` (any format; alpha is dropped)."""
    if image.isNull():
        raise ValueError("the clipboard image is empty")
    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    width, height, stride = rgb.width(), rgb.height(), rgb.bytesPerLine()
    data = np.frombuffer(rgb.constBits(), np.uint8, count=stride * height)
    return data.reshape(height, stride)[:, :width * 3].reshape(height, width, 3).copy()


def target_from_paths(paths: Sequence[str | os.PathLike]) -> str | list[str] | None:
    """What to open for dropped/pasted paths: one path as it is; several: their image files."""
    paths = [os.fspath(p) for p in paths]
    if not paths:
        return None
    if len(paths) == 1:
        return paths[0]
    images = sorted(p for p in paths if os.path.isfile(p) and is_image_path(p))
    if len(images) > 1:
        return images
    return images[0] if images else paths[0]


def describe_target(target) -> str:
    """A short phrase for the status bar: 'video clip.avi', '12 images', 'camera 0'."""
    if isinstance(target, list):
        return f"{len(target)} images"
    text = str(target)
    kind = describe(text)
    if kind == "camera":
        return f"camera {text.strip()}"
    if kind == "stream":
        return f"stream {one_line(redact_url(text), 80)}"
    return f"{kind} {display_name(text.rstrip('/') or text)}"


SLIDESHOW = {"1 s each": 1.0, "2 s each": 2.0, "0.5 s each": 0.5, "no wait": 0.0}
DEFAULT_SLIDESHOW = "1 s each"


# auto's word in the backend picker: "auto" alone would read like the precision picker beside it. Each
# backend's word is its registry entry's short name (engine.api.backends).
AUTO_TEXT = "fastest"

class SourceBar(QToolBar):
    source_chosen = Signal(object)  # a path, list of paths, camera index as text, or URL
    image_pasted = Signal(object, str)  # RGB uint8 array, its name
    play_pause = Signal()
    step = Signal()
    step_back = Signal()
    reset_stats = Signal()
    help_requested = Signal()
    cifar_download_requested = Signal()
    profile_chosen = Signal(str)
    device_chosen = Signal(str)
    precision_chosen = Signal(str)
    backend_chosen = Signal(str)
    per_channel_toggled = Signal(bool)
    gradcam_toggled = Signal(bool)
    message = Signal(str, bool)  # status bar text, is_error

    def __init__(self, settings: QSettings, parent: QWidget | None = None, *,
                 devices: Sequence[str] = ("cpu",)) -> None:
        super().__init__("Sources", parent)
        self.settings = settings
        self.setObjectName("sourceBar")
        self.setMovable(False)
        self.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self._add("Image\u2026", self.open_images, "Open one or more image files", QKeySequence.StandardKey.Open)
        self._add("Folder\u2026", self.open_folder, "Open every image in a folder (labelled when its sub-folders "
                                                    "are named after classes)")
        self._add("Video\u2026", self.open_video, "Play a video file once, in real time")
        self._add("Camera\u2026", self.open_camera, "Use a webcam by its index")
        self._add("Stream\u2026", self.open_stream, "Open a network stream (rtsp://, http://)")
        self._add("CIFAR-10\u2026", self.open_cifar, "The labelled CIFAR-10 test set: running accuracy")
        self._add("Paste", self.paste, "Classify the image on the clipboard", QKeySequence.StandardKey.Paste)
        self.addSeparator()
        self.play_action = self._add("Pause", self.play_pause.emit, "Play / pause (Space)", Qt.Key.Key_Space)
        self.back_action = self._add("Back", self.step_back.emit,
                                     "The frame before, again (Left arrow); shown, not counted again", Qt.Key.Key_Left)
        self.step_action = self._add("Step", self.step.emit, "One frame forward, paused (Right arrow)",
                                     Qt.Key.Key_Right)
        self.reset_action = self._add("Reset", self.reset_stats.emit,
                                      "Start the statistics over: running accuracy, plots, frame rates and latencies "
                                      "(a new source does this by itself)")
        icons = self.style()
        self._play_icon = icons.standardIcon(QStyle.StandardPixmap.SP_MediaPlay)
        self._pause_icon = icons.standardIcon(QStyle.StandardPixmap.SP_MediaPause)
        self.play_action.setIcon(self._pause_icon)
        self.step_action.setIcon(icons.standardIcon(QStyle.StandardPixmap.SP_MediaSeekForward))
        self.back_action.setIcon(icons.standardIcon(QStyle.StandardPixmap.SP_MediaSeekBackward))
        self.reset_action.setIcon(icons.standardIcon(QStyle.StandardPixmap.SP_BrowserReload))
        # icons alone (their tooltips name them): the toolbar fits the window's size on a 1366-pixel screen
        for action in (self.play_action, self.back_action, self.step_action, self.reset_action):
            button = self.widgetForAction(action)
            if button is not None:
                button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
        self.addSeparator()
        self.profile_box = self._combo("", PROFILES, "Profile: the trained line-up, 32x32 CIFAR-10 or 224x224 ImageNet")
        self.profile_box.currentTextChanged.connect(self.profile_chosen.emit)
        self.device_box = self._combo("", devices, "Device: where the networks run")
        self.device_box.currentTextChanged.connect(self.device_chosen.emit)
        self.precision_box = self._combo("", PRECISIONS, "Number format: auto runs each network in bf16 where this "
                                         "machine has bf16 arithmetic, or int8 where its int8 graph kept its "
                                         "accuracy (eval --precision int8 measures it), each only where it "
                                         "measured faster at load (the network's cost line then says so); "
                                         "fp32, bf16 or int8 for all")
        self.precision_box.currentTextChanged.connect(self.precision_chosen.emit)
        entries = {b.name: b for b in backends()}
        choices = backend_choices()
        self.backend_box = self._combo("", [entries[b].short if b in entries else AUTO_TEXT for b in choices],
                                       "What runs the networks (the runtime): fastest times, for each network, "
                                       "every backend, thread count and number format that agrees with torch, and "
                                       "keeps the fastest; or one for all: " +
                                       ", ".join(f"{b.short} ({b.label})" for b in entries.values()) +
                                       ". Each network's cost line says which ran it, its tooltip the times")
        for i, backend in enumerate(choices):
            self.backend_box.setItemData(i, backend)
        self.backend_box.currentIndexChanged.connect(lambda i: self.backend_chosen.emit(choices[i]))
        self.stills_box = self._combo("", list(SLIDESHOW), "How long each picture of a folder or "
                                      "a list of files stays on screen; 'no wait': as fast as the networks go "
                                      "(videos play at their own rate)")
        remembered = str(self.settings.value("slideshow", DEFAULT_SLIDESHOW) or DEFAULT_SLIDESHOW)
        self.stills_box.setCurrentText(remembered if remembered in SLIDESHOW else DEFAULT_SLIDESHOW)
        self.stills_box.currentTextChanged.connect(lambda text: self.settings.setValue("slideshow", text))
        self.addSeparator()
        self.scale_action = QAction("Per channel", self)
        self.scale_action.setCheckable(True)
        self.scale_action.setToolTip("Feature maps: stretch every channel to its own range (on) or share one "
                                     "range so channels compare (off)")
        self.scale_action.toggled.connect(self.per_channel_toggled.emit)
        self.addAction(self.scale_action)
        self.gradcam_action = QAction("Grad-CAM", self)
        self.gradcam_action.setCheckable(True)
        self.gradcam_action.setToolTip("Where each network looked for its answer: a Grad-CAM map of its top-1 class "
                                       "over its input, for the layer in its picker (switching this on picks each "
                                       "network's last convolution stage; pick another to explain it instead). "
                                       "One backward pass per network and frame: video plays slower")
        self.gradcam_action.toggled.connect(self.gradcam_toggled.emit)
        self.addAction(self.gradcam_action)
        self.help_action = self._add("?", self.help_requested.emit, "What am I looking at? (F1)", Qt.Key.Key_F1)

    def _add(self, text: str, slot, tip: str, shortcut=None) -> QAction:
        action = QAction(text, self)
        action.setToolTip(tip)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.triggered.connect(lambda _checked=False: slot())
        self.addAction(action)
        return action

    def _combo(self, title: str, items: Sequence[str], tip: str) -> QComboBox:
        box = QComboBox(self)
        box.addItems(list(items))
        box.setToolTip(tip)
        box.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        if title:
            self.addWidget(QLabel(title, self))
        self.addWidget(box)
        return box

    @property
    def slideshow_interval(self) -> float:
        """Seconds each still picture stays on screen (0: as fast as the networks go)."""
        return SLIDESHOW.get(self.stills_box.currentText(), 1.0)

    def set_playing(self, playing: bool) -> None:
        self.play_action.setText("Pause" if playing else "Play")
        self.play_action.setIcon(self._pause_icon if playing else self._play_icon)

    def set_profile(self, profile: str) -> None:
        self.profile_box.blockSignals(True)
        self.profile_box.setCurrentText(profile)
        self.profile_box.blockSignals(False)

    def set_precision(self, precision: str) -> None:
        self.precision_box.blockSignals(True)
        self.precision_box.setCurrentText(precision)
        self.precision_box.blockSignals(False)

    def set_backend(self, backend: str) -> None:
        self.backend_box.blockSignals(True)
        self.backend_box.setCurrentIndex(max(0, self.backend_box.findData(backend)))
        self.backend_box.blockSignals(False)

    @property
    def backend(self) -> str:
        return str(self.backend_box.currentData())

    def set_device(self, device: str) -> None:
        self.device_box.blockSignals(True)
        if self.device_box.findText(device) < 0:
            self.device_box.addItem(device)
        self.device_box.setCurrentText(device)
        self.device_box.blockSignals(False)

    # -- choosing a source ---------------------------------------------------------------------

    def _last_folder(self) -> str:
        folder = str(self.settings.value("last_folder", "") or "")
        return folder if folder and os.path.isdir(folder) else os.path.expanduser("~")

    def remember_folder(self, path: str) -> None:
        folder = path if os.path.isdir(path) else os.path.dirname(path)
        if folder:
            self.settings.setValue("last_folder", folder)

    def choose(self, target) -> None:
        """Open ``target`` (from a dialog, a drop or a paste) and remember where it was."""
        first = target[0] if isinstance(target, list) else target
        if describe(str(first)) not in ("camera", "stream"):
            self.remember_folder(str(first))
        self.source_chosen.emit(target)

    def open_images(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Open images", self._last_folder(), IMAGE_FILTER)
        if paths:
            self.choose(paths if len(paths) > 1 else paths[0])

    def open_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a folder of images", self._last_folder())
        if path:
            self.choose(path)

    def open_video(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a video", self._last_folder(), VIDEO_FILTER)
        if path:
            self.choose(path)

    def open_camera(self) -> None:
        index, ok = QInputDialog.getInt(self, "Camera", "Camera index (0 is the first camera):",
                                        int(self.settings.value("camera_index", 0) or 0), 0, 63)
        if ok:
            self.settings.setValue("camera_index", index)
            self.message.emit(f"Opening camera {index}\u2026 (a message follows if there is none)", False)
            self.choose(str(index))

    def open_stream(self) -> None:
        url, ok = QInputDialog.getText(self, "Network stream", "Stream address (rtsp://\u2026, http://\u2026):",
                                       text=str(self.settings.value("stream_url", "") or ""))
        url = url.strip()
        if not ok or not url:
            return
        if describe(url) != "stream":
            shown = one_line(redact_url(url), 80)
            self.message.emit(f"Not a stream address: {shown} (expected something like rtsp://host/path)", True)
            return
        self.settings.setValue("stream_url", redact_url(url, placeholder=""))  # never a password on disk
        self.source_chosen.emit(url)

    def cifar_start_path(self) -> str:
        remembered = str(self.settings.value("cifar10_path", "") or "")
        if remembered and os.path.exists(remembered):
            return remembered
        if cifar10_archive_path().is_file():  # downloaded from here before
            return str(cifar10_archive_path())
        if self.settings.value("last_folder", ""):
            return self._last_folder()
        downloads = Path.home() / "Downloads"  # where a browser puts cifar-10-python.tar.gz
        return str(downloads) if downloads.is_dir() else str(Path.home())

    def open_cifar(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "The CIFAR-10 archive (or cancel to download it)",
                                              self.cifar_start_path(), CIFAR_FILTER)
        if path:
            self.open_cifar_path(path)
            return
        answer = QMessageBox.question(
            self, "Download CIFAR-10?",
            f"No archive chosen. Download the official CIFAR-10 archive ({CIFAR10_BYTES / 1e6:.0f} MB) from "
            f"www.cs.toronto.edu into {cifar10_archive_path().parent}? It is checked against its published "
            "checksum, and the download can be cancelled.")
        if answer == QMessageBox.StandardButton.Yes:
            self.cifar_download_requested.emit()

    def open_cifar_path(self, path: str) -> None:
        self.settings.setValue("cifar10_path", path)
        self.message.emit("Loading the CIFAR-10 test set\u2026 (the first time takes a while)", False)
        self.source_chosen.emit(path)

    def paste(self) -> None:
        clipboard = QGuiApplication.clipboard()
        mime = clipboard.mimeData()
        if mime is not None and mime.hasImage():
            try:
                self.image_pasted.emit(qimage_to_rgb(clipboard.image()), "pasted image")
            except (ValueError, TypeError) as e:
                self.message.emit(f"Cannot paste: {e}", True)
            return
        if mime is not None and mime.hasUrls():
            paths = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]
            target = target_from_paths(paths)
            if target is not None:
                self.choose(target)
                return
        if mime is not None and mime.hasText() and os.path.exists(mime.text().strip()):
            self.choose(mime.text().strip())
            return
        self.message.emit("Nothing to paste: the clipboard holds no image or file", True)
