"""One network's column: who it is, what it sees, what it answers, and what its layers compute.

Built once per session (``set_info``) and then only updated in place per frame (``show_result``):
labels change text, the canvases get new images, nothing is created or destroyed per frame.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.api import (
    HealthAccumulator,
    ModelCard,
    ModelResult,
    WeightsKind,
    backend_label,
    backend_short,
    deeper_layer,
    human_count,
)
from gui import style
from gui.elided import ElidedLabel
from gui.feature_maps import FeatureMapView, shape_text
from gui.image_canvas import ImageCanvas
from gui.imaging import blend_channel, blend_class_map, blend_heat, class_shares
from gui.pinned import Pinned
from gui.runtime_menu import add_runtime_menu
from gui.topk_bars import TopKBars

STATUS_BADGES = {  # weights kind -> (text, background)
    WeightsKind.BUNDLED: ("TRAINED", style.GOOD),
    WeightsKind.DOWNLOADED: ("PRETRAINED", style.ACCENT),
    WeightsKind.CUSTOM: ("CUSTOM", style.WARN),
    WeightsKind.UNTRAINED: ("UNTRAINED", style.BAD),
}


def status_badge(status: WeightsKind | str, test_top1: float | None,
                 published_top1: float | None = None) -> tuple[str, str]:
    text, colour = STATUS_BADGES.get(status, (str(status).upper(), style.TEXT_DIM))
    if status == WeightsKind.BUNDLED and test_top1 is not None:
        text = f"TRAINED \u00b7 test {100 * test_top1:.1f}%"
    elif status == WeightsKind.CUSTOM and test_top1 is not None:  # as the file's own metrics JSON states it
        text = f"CUSTOM \u00b7 its file: test {100 * test_top1:.1f}%"
    elif status == WeightsKind.DOWNLOADED and published_top1 is not None:
        text = f"{text} \u00b7 pub. {100 * published_top1:.1f}%"
    return text, colour


def agreement_badge(same: int, total: int) -> tuple[str, str]:
    """How many networks (itself included) gave this network's top-1, as badge text and colour."""
    if total <= 1:
        return "", style.TEXT_DIM
    if same == total:
        return f"all {total} agree", style.GOOD
    if same * 2 > total:
        return f"majority {same}/{total}", style.GOOD
    if same > 1:
        return f"agrees {same}/{total}", style.WARN
    return "disagrees", style.BAD


def weights_note(status: WeightsKind | str, source: str, name: str, downloadable: bool = False) -> str:
    """One or two lines under the input: where the weights come from, or why there are none."""
    if status != WeightsKind.UNTRAINED:
        return f"Weights: {source}"
    if downloadable:
        return "Random weights: not downloaded yet (Change \u25b8 Download)"
    if "random weights" in source:  # e.g. "no ImageNet weights exist ...: random weights, for ..."
        reason, colon, _ = source.partition(":")  # the whole sentence stays in the tooltip
        return f"Random weights: {reason}." if colon else source[:1].upper() + source[1:]
    return f"Random weights, its answers are noise: not trained yet (python main.py train --model {name})"


def layer_label(name: str, shape: tuple[int, ...]) -> str:
    return f"{name}   {shape_text(shape)}"


def _label(parent: QWidget, name: str = "", *, width: int | None = None) -> QLabel:
    """An empty label; with ``width``, of that fixed width and right-aligned (a number column)."""
    label = QLabel("", parent)
    if name:
        label.setObjectName(name)
    if width is not None:
        label.setFixedWidth(width)
        label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return label


def _row(*items: QWidget | None) -> QHBoxLayout:
    """A row of widgets; ``None`` is the stretch that pushes what follows to the right."""
    row = QHBoxLayout()
    for item in items:
        if item is None:
            row.addStretch(1)
        else:
            row.addWidget(item)
    return row


class Badge(QLabel):
    """A short tag on a coloured ground ("majority 3/4", "\u2713 correct"). The ground is painted
    here rather than set by a style sheet: a new style sheet re-polishes the widget, and the
    correct/wrong badge changes colour on most frames (two style-sheet changes a frame in each of
    four panels cost the window's thread about a millisecond a frame)."""

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setObjectName("badge")
        self.colour = QColor(0, 0, 0, 0)
        policy = self.sizePolicy()
        policy.setRetainSizeWhenHidden(True)  # showing or hiding it must not re-lay out the panel
        self.setSizePolicy(policy)
        self.hide()

    def set_colour(self, colour: str) -> None:
        colour = QColor(colour)
        if colour != self.colour:
            self.colour = colour
            self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(self.colour)
        painter.drawRoundedRect(QRectF(self.rect()), 3, 3)
        painter.end()
        super().paintEvent(event)


def _set_badge(label: Badge, text: str, colour: str, tooltip: str = "") -> None:
    if not text:
        label.hide()
        return
    if label.text() != text:
        label.setText(text)
    label.set_colour(colour)
    if label.toolTip() != tooltip:
        label.setToolTip(tooltip)
    if label.isHidden():
        label.show()


# Why a live forward pass takes longer than `bench` says (a small network most: a LeNet-5 pass is
# a tenth of a millisecond, so fixed costs weigh) and what the live figure includes.
LIVE_TIMING = ("Timed in the live pipeline: a new picture every frame, the four networks in turn (the others "
               "push this one's weights out of the processor's caches), the shown layer's outputs copied out, "
               "and the window's thread sharing the Python interpreter. `python main.py bench` times the network "
               "alone on one input, again and again: for a small network its figure is several times lower.")

WEIGHTS_FILTER = "Checkpoints (*.safetensors *.pth *.pt);;All files (*)"


class ModelPanel(QFrame):
    layer_requested = Signal(str, str)  # model name, layer name
    weights_requested = Signal(str, str)  # model name, checkpoint path ("" for the default weights)
    download_requested = Signal(str)  # model name: download its torchvision weights
    original_requested = Signal()  # show the frame on screen as it was loaded, full size
    input_clicked = Signal(float, float)  # where on its input, as fractions of the width and height
    gradcam_target_requested = Signal(str, object)  # model, class index to explain (None: its top-1)
    channel_study_requested = Signal(str, str, int)  # model, layer, channel: what does it look for?
    lineup_requested = Signal(str)  # put this network (another VGG depth) in this panel's place
    runtime_requested = Signal(str, str)  # model name, its own backend ("": the toolbar's)

    def __init__(self, index: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("modelPanel")
        self.index = index
        self.color = style.model_color(index)
        self.name = ""
        self.info: ModelCard | None = None
        self.frame_id: int | None = None  # the frame this panel shows
        self.layer: str | None = None  # the layer the picker asks for
        self.capture_generation = 0  # results answering an older capture request show other layers
        self.show_class_map = True
        self.show_gradcam = False  # paint the frame's Grad-CAM (a probe the window asks for) over the input
        self.channel_opacity = 0.7  # of a selected channel painted over the input (scroll on the input)
        self.gradcam_target: int | None = None  # the class Grad-CAM explains; None: the top-1 of each frame
        self._health = HealthAccumulator()  # the shown layer's zeros and silent channels on this source
        self._health_layer: str | None = None
        self._result: ModelResult | None = None
        self._palette = style.class_palette(10)
        self._lut = style.feature_lut()
        self._heat_lut = style.heat_lut()
        self._build()

    # -- construction --------------------------------------------------------------------------

    def _build(self) -> None:
        self.title = QLabel("\u2013", self)
        self.title.setObjectName("panelTitle")
        self.title.setStyleSheet(f"color: {self.color};")
        self.year = _label(self, "dim")
        self.status = Badge(self)
        self.weights_button = QToolButton(self)
        self.weights_button.setText("Change")
        self.weights_button.setAutoRaise(True)
        self.weights_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.weights_button.setToolTip("Run this network on your own checkpoint (.safetensors, or a .pth in this "
                                       "project's or torchvision's layer names), or go back to its default weights")
        menu = QMenu(self.weights_button)
        self.load_action = menu.addAction("Load weights\u2026", self._choose_weights)
        self.default_action = menu.addAction("Use the default weights", lambda: self._request_weights(""))
        self.download_action = menu.addAction("Download weights", lambda: self.download_requested.emit(self.name))
        self.download_action.setVisible(False)
        self.lineup_menu = menu.addMenu("Network")
        self.lineup_menu.menuAction().setVisible(False)
        self.runtime_menu = add_runtime_menu(menu, lambda backend: self.runtime_requested.emit(self.name, backend))
        self.weights_button.setMenu(menu)
        head = _row(self.title, self.year, None, self.status)

        self.cost = ElidedLabel("", self)  # a narrow panel ends it with an ellipsis, not a cut letter
        self.cost.setObjectName("dim")
        self.latency = _label(self, width=72)
        self.latency.setStyleSheet("font-weight: bold;")
        self.latency.ensurePolished()  # the bold font's width: a slow frame's "1113.6 ms" was cut to "l113.6 ms"
        self.latency.setFixedWidth(self.latency.fontMetrics().horizontalAdvance("99999.9 ms") + 6)
        self.latency.setFixedHeight(self.latency.fontMetrics().height() + 2)  # fixed both ways: see gui.pinned
        costs = _row(self.cost, None, self.latency)

        self.agree = Badge(self)
        self.correct = Badge(self)
        # "frame 17", or with a perturbation on, whether the answer flipped from the clean frame's
        self.frame_label = ElidedLabel("", self)
        self.frame_label.setObjectName("dim")
        # the width the badges leave, down to nothing (it elides): at a fixed 160 px it pushed the
        # wrong-answer badge into being cut on a 1366-pixel screen ("label: auto" for automobile)
        self.frame_label.setMinimumWidth(0)
        self.frame_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.frame_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        badge_row = QWidget(self)
        badge_layout = _row(self.agree, self.correct, self.frame_label)  # the label takes what is left
        badge_layout.setContentsMargins(0, 0, 0, 0)
        badge_row.setLayout(badge_layout)
        self.agree.setText("\u2713")  # a badge's height, with its style applied
        self.agree.ensurePolished()
        badge_height = max(self.agree.sizeHint().height(), self.frame_label.fontMetrics().height())
        self.agree.setText("")
        # the badges change with every frame: that re-lays out this row only (gui.pinned)
        badges = Pinned(badge_row, self, height=badge_height)

        self.input_view = ImageCanvas(self, min_size=96)
        self.input_view.setFixedSize(136, 136)
        self.input_view.on_click = self._input_click
        self.input_view.on_wheel = self._wheel
        self.input_view.on_double_click = self.original_requested.emit
        self.input_view.setToolTip("What this network sees. Double-click: the picture as it was loaded")
        self.input_caption = QLabel("", self)
        self.input_caption.setObjectName("dim")
        self.input_caption.setWordWrap(True)
        self.input_caption.ensurePolished()  # the style sheet's font, not the default one
        self.input_caption.setFixedSize(136, 2 * self.input_caption.fontMetrics().lineSpacing() + 2)
        self.input_caption.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.input_caption.linkActivated.connect(self.select_layer)  # "try relu5_3" under an empty Grad-CAM
        left = QVBoxLayout()
        left.setSpacing(2)
        left.addWidget(self.input_view)
        left.addWidget(self.input_caption)
        left.addStretch(1)
        self.bars = TopKBars(5, self)
        self.bars.set_color(self.color)
        self.bars.class_clicked.connect(self._class_clicked)
        self.bars.setToolTip("With Grad-CAM on, click a class to see the evidence for it; click it again "
                             "to follow the top-1 answer")
        seen = QHBoxLayout()
        seen.addLayout(left)
        seen.addWidget(self.bars, 1)

        self.class_map_box = QCheckBox("class map", self)
        self.class_map_box.setChecked(True)
        self.class_map_box.setToolTip("Paint ENet's per-pixel class map over its input")
        self.class_map_box.toggled.connect(self._toggle_class_map)
        self.note = QLabel("", self)
        self.note.setObjectName("dim")
        self.note.setWordWrap(True)
        self.note.setTextFormat(Qt.TextFormat.RichText)
        self.note.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        note_row = QWidget(self)
        note_row.setFixedHeight(36)
        note_layout = QHBoxLayout(note_row)
        note_layout.setContentsMargins(0, 0, 0, 0)
        note_layout.addWidget(self.class_map_box)
        note_layout.addWidget(self.note, 1)
        note_layout.addWidget(self.weights_button, 0, Qt.AlignmentFlag.AlignTop)

        self.layers = QComboBox(self)
        self.layers.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.layers.setMinimumContentsLength(12)
        self.layers.setToolTip("Which layer's output the feature maps below show")
        self.layers.currentIndexChanged.connect(self._layer_chosen)
        picker = QHBoxLayout()
        layer_title = QLabel("Layer", self)
        layer_title.setObjectName("dim")
        picker.addWidget(layer_title)
        picker.addWidget(self.layers, 1)

        self.features = FeatureMapView(self)
        self.features.extra_actions.append(
            ("What does channel {channel} look for? (its top 9 CIFAR-10 test images)",
             lambda channel: channel is not None and self.layer is not None
             and self.channel_study_requested.emit(self.name, self.layer, channel)))
        self.features.channel_selected.connect(lambda _channel: self._paint_input())

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.setSpacing(4)
        layout.addLayout(head)
        layout.addLayout(costs)
        layout.addWidget(badges)
        layout.addLayout(seen)
        layout.addWidget(Pinned(note_row, self))  # ENet's legend changes with every frame
        layout.addLayout(picker)
        layout.addWidget(self.features, 1)
        # An explicit minimum size, set once: text that changes every frame must not re-lay out
        # the window. Its height is what the rows need (a shorter panel would overlap them), with
        # a few pixels for labels that are still empty now.
        self.ensurePolished()  # the style sheet's paddings count
        self.setMinimumSize(230, layout.minimumSize().height() + 4)

    def set_lineup(self, choices: list[tuple[str, str, bool]]) -> None:
        """The networks that can take this panel's place (name, label, has weights), shown in the
        Change menu when there is more than one."""
        self.lineup_menu.clear()
        for name, label, has_weights in choices:
            action = self.lineup_menu.addAction(label if has_weights else f"{label} (no weights)")
            action.setCheckable(True)
            action.setChecked(name == self.name)
            action.triggered.connect(lambda _checked=False, n=name: self._lineup_chosen(n))
        self.lineup_menu.menuAction().setVisible(len(choices) > 1)

    def _lineup_chosen(self, name: str) -> None:
        if name != self.name:
            self.lineup_requested.emit(name)

    def _choose_weights(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, f"Weights for {self.name}", "", WEIGHTS_FILTER)
        if path:
            self._request_weights(path)

    def _request_weights(self, path: str) -> None:
        if self.name:
            self.weights_requested.emit(self.name, path)

    # -- session -------------------------------------------------------------------------------

    def update_card(self, info: ModelCard) -> None:
        """The same network, with a choice the engine made again on live frames (its torch threads):
        the card's text and tooltip change, nothing shown or asked for does."""
        if info.name == self.name:
            self.info = info
            self._set_cost(info)

    def _set_cost(self, info: ModelCard) -> None:
        cost = info.complexity
        if cost is not None:
            # what runs it first, where it is not torch eager in fp32: a narrow panel cuts the end
            runtime = " ".join(([backend_short(info.backend)] if info.backend != "torch" else []) +
                               ([info.precision] if info.precision != "fp32" else []))
            self.cost.setText((f"{runtime} \u00b7 " if runtime else "") +
                              f"{human_count(cost.params, 3)} params \u00b7 {human_count(cost.macs, 3)} MACs")
            # bf16 and a backend other than torch eager are worth saying (their numbers differ
            # slightly from fp32 eager's); fp32 on torch is the norm
            self.cost.setToolTip(f"{cost.params:,} parameters, {cost.macs:,} multiply-accumulates per image, "
                                 f"{cost.size_mb:.1f} MB of weights in fp32, {cost.activation_mb:.2f} MB of "
                                 f"activations. Runs in {info.precision}"
                                 + (f": {info.precision_note}" if info.precision_note else "")
                                 + f". Forward pass and feature maps on {backend_label(info.backend)}"
                                 + (f" ({info.backend_note})" if info.backend_note else "")
                                 + ("; Grad-CAM on torch eager (it needs gradients)" if info.backend != "torch"
                                    else ""))
        else:
            self.cost.setText("")

    def set_info(self, info: ModelCard, layer: str | None = None) -> None:
        """A new session: who this network is, its layers, and which one to show."""
        self.info, self.name = info, info.name
        self.gradcam_target = None  # class indices belong to one profile's vocabulary
        self.title.setText(info.display)
        self.title.setToolTip(f"{info.title}: {info.paper}, {info.year}")
        self.year.setText(str(info.year) if info.year else "")
        text, colour = status_badge(info.weights, info.test_top1, info.published_top1)
        _set_badge(self.status, text, colour, info.weights_source)
        self._set_cost(info)
        self.latency.setText("")
        self.class_map_box.setVisible(info.has_class_map)
        self._palette = style.class_palette(max(1, len(info.class_names)))
        self._set_note_for_weights()
        self.default_action.setEnabled(info.weights == WeightsKind.CUSTOM)
        self.download_action.setVisible(info.downloadable)
        if info.downloadable:
            size = f" ({info.download_bytes / 1e6:.0f} MB)" if info.download_bytes else ""
            self.download_action.setText(f"Download the ImageNet weights{size}")
        known = {entry.name for entry in info.layers}
        self.layer = layer if layer in known else (info.default_layer if info.default_layer in known else
                                                    (info.layers[0].name if info.layers else None))
        self.layers.blockSignals(True)
        self.layers.clear()
        for entry in info.layers:
            self.layers.addItem(layer_label(entry.name, entry.shape), entry.name)
            tip = f"{entry.kind}: {entry.name}, output {shape_text(entry.shape)}"
            self.layers.setItemData(self.layers.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        if self.layer is not None:
            self.layers.setCurrentIndex(self.layers.findData(self.layer))
        self.layers.blockSignals(False)
        self.frame_id = None
        self._result = None
        self.bars.clear()
        self.input_view.clear()
        self.input_caption.setText("")
        self.frame_label.setText("")
        self.agree.hide()
        self.correct.hide()
        self.features.clear("feature maps appear with the first frame")

    def _set_note_for_weights(self) -> None:
        info = self.info
        if info is None or info.has_class_map:
            self.note.setText("")
            return
        self.note.setText(weights_note(info.weights, info.weights_source, info.name, info.downloadable))
        self.note.setToolTip(info.weights_source)

    def _layer_chosen(self, index: int) -> None:
        layer = self.layers.itemData(index)
        if layer and layer != self.layer:
            self.layer = layer
            self.features.clear(f"{layer}: waiting for the next frame\u2026")
            self.layer_requested.emit(self.name, layer)

    def select_layer(self, layer: str) -> bool:
        """Pick ``layer`` in the picker (as a person would); False when the network has none."""
        index = self.layers.findData(layer)
        if index < 0:
            return False
        self.layers.setCurrentIndex(index)
        return True

    def _toggle_class_map(self, on: bool) -> None:
        self.show_class_map = on
        self._paint_input()

    # -- per frame -----------------------------------------------------------------------------

    def show_result(self, frame_id: int, result: ModelResult, truth: str | None, same: int, total: int,
                    generation: int = 0, clean_top1: int | None = None) -> None:
        """``generation``: the capture request the frame answers; one older than the layer picked
        last (:attr:`capture_generation`) keeps the feature maps as they are. ``clean_top1``: with a
        perturbation on, this network's answer on the clean frame."""
        self.frame_id, self._result = frame_id, result
        self._show_flip(frame_id, result, clean_top1)
        self.latency.setText(f"{result.forward_ms:.1f} ms")
        self.latency.setToolTip(f"This frame: forward pass {result.forward_ms:.2f} ms + preprocessing "
                                f"{result.preprocess_ms:.2f} ms. {LIVE_TIMING}")
        text, colour = agreement_badge(same, total)
        _set_badge(self.agree, text, colour, "networks (this one included) whose top-1 answer is the same")
        if truth is None:
            self.correct.hide()
        elif result.top_labels and result.top_labels[0] == truth:
            _set_badge(self.correct, "\u2713 correct", style.GOOD, f"the label is {truth}")
        else:
            _set_badge(self.correct, f"\u2717 label: {truth}", style.BAD, f"wrong: the label is {truth}")
        self.bars.set_predictions(result.top_labels, result.top_probs, truth)
        current = generation >= self.capture_generation
        activation = result.activations.get(self.layer) if self.layer and current else None
        if activation is not None and activation.ndim == 3:
            self._count_health(activation)
            self.features.set_activation(self.layer, activation)
        if result.class_map is not None and self.info is not None and self.info.has_class_map:
            self._show_legend(result.class_map)
        self._paint_input()

    def reset_health(self) -> None:
        """A new source (or layer): the "never fired" count starts over."""
        self._health = HealthAccumulator()
        self._health_layer = self.layer

    def _count_health(self, activation: np.ndarray) -> None:
        if self._health_layer != self.layer:
            self.reset_health()
        try:
            frame = self._health.add(activation)
        except ValueError:  # another channel count: the layer changed under the same name
            self.reset_health()
            frame = self._health.add(activation)
        seen = self._health.snapshot()
        never = len(seen.never_fired)
        self.features.health = (f" \u00b7 {100 * frame.zero_fraction:.0f}% zeros"
                                + (f" \u00b7 {never} ch never fired in {seen.frames} frames" if never else ""))
        self.features.setToolTip(f"This frame: {100 * frame.zero_fraction:.0f}% of the outputs are 0, "
                                 f"{len(frame.dead_channels)} of {frame.channels} channels have no positive value. "
                                 f"Since this source opened ({seen.frames} frames): {never} channels never fired"
                                 + (f" ({', '.join(map(str, seen.never_fired[:20]))}"
                                    f"{'...' if never > 20 else ''})" if never else ""))

    def _show_flip(self, frame_id: int, result: ModelResult, clean_top1: int | None) -> None:
        if clean_top1 is None:
            text, colour, tip = f"frame {frame_id}", "", ""
        elif clean_top1 == result.top1:
            text, colour = "unchanged", style.GOOD
            tip = f"Frame {frame_id}: the same answer as on the clean frame ({result.top_labels[0]})"
        else:
            before = result.class_names[clean_top1] if clean_top1 < len(result.class_names) else str(clean_top1)
            text, colour = f"flipped: {before} \u2192 {result.top_labels[0]}", style.BAD
            tip = f"Frame {frame_id}: {before} on the clean frame, {result.top_labels[0]} perturbed"
        if self.frame_label.text() != text:
            self.frame_label.setText(text)
            self.frame_label.setToolTip(tip or text)
        if self.frame_label.property("frameColour") != colour:  # a new style sheet re-polishes: not every frame
            self.frame_label.setProperty("frameColour", colour)
            self.frame_label.setStyleSheet(f"color: {colour};" if colour else "")

    def _wheel(self, steps: int) -> bool:
        """Scrolling over the input while a channel is painted on it: more or less opaque."""
        if self.features.selected is None:
            return False
        self.channel_opacity = min(1.0, max(0.1, round(self.channel_opacity + 0.1 * steps, 1)))
        self._paint_input()
        return True

    def _input_click(self, x: float, y: float) -> None:
        self.features.select_channel(None)
        view = self._result.view if self._result is not None else None
        if view is not None:
            self.input_clicked.emit(x / view.shape[1], y / view.shape[0])

    def _class_clicked(self, label: str) -> None:
        if not self.show_gradcam or self.info is None or label not in self.info.class_names:
            return
        index = self.info.class_names.index(label)
        self.gradcam_target = None if index == self.gradcam_target else index
        self.gradcam_target_requested.emit(self.name, self.gradcam_target)

    def set_gradcam(self, on: bool) -> None:
        self.show_gradcam = on
        self._paint_input()

    def _show_legend(self, class_map: np.ndarray) -> None:
        names = self.info.class_names if self.info else ()
        parts = []
        for cls, share in class_shares(class_map, len(names), top=4):
            if share < 0.005:
                break
            r, g, b = (int(v) for v in self._palette[min(cls, len(self._palette) - 1)])
            name = names[cls] if cls < len(names) else str(cls)
            parts.append(f"<span style='color: rgb({r},{g},{b}); font-size: 12pt;'>\u25a0</span>"
                         f"&nbsp;{name}&nbsp;{100 * share:.0f}%")
        self.note.setText("&nbsp;&nbsp; ".join(parts))

    def _paint_input(self) -> None:
        result = self._result
        if result is None:
            return
        view = result.view
        channel = self.features.selected_map()
        cam = result.probes.get("gradcam") if self.show_gradcam else None
        if cam is None and self.input_view.toolTip():
            self.input_view.setToolTip("")
        if channel is not None:
            self.input_view.set_rgb(blend_channel(view, channel, self._lut, self.channel_opacity))
            caption = f"channel {self.features.selected} over the input, {100 * self.channel_opacity:.0f}%"
            self.input_view.setToolTip("The selected channel, upsampled to the input, over it; scroll here to change "
                                       "how opaque it is")
        elif cam is not None and hasattr(cam, "map") and not cam.map.any():
            # Every location of this layer's weighted map lowers the class score: the ReLU leaves
            # nothing. Said, with the deeper layer to try, rather than an empty overlay.
            self.input_view.set_rgb(view)
            deeper = deeper_layer(self.info.layers, cam.layer) if self.info is not None else None
            short = cam.layer.rsplit(".", 1)[-1]
            caption = f"no \u201c{cam.label}\u201d evidence at {short}" + (
                f": <a href=\"{deeper}\">try {deeper.rsplit('.', 1)[-1]}</a>" if deeper else "")
            self.input_view.setToolTip(f"Grad-CAM of '{cam.label}' on {cam.layer}: at every location the channels "
                                       "that lower the class score outweigh those that raise it, so the map is "
                                       "empty" + (f"; {deeper}, deeper, usually has evidence (click the caption)"
                                                  if deeper else ""))
        elif cam is not None and hasattr(cam, "map"):
            self.input_view.set_rgb(blend_heat(view, cam.map, self._heat_lut))
            caption = f"Grad-CAM of \u201c{cam.label}\u201d ({cam.ms:.0f} ms)"
            self.input_view.setToolTip(f"Where {self.name} found the evidence for '{cam.label}' "
                                       f"({100 * cam.probability:.0f}%): {cam.method} on {cam.layer}, its "
                                       f"{cam.grid[0]}\u00d7{cam.grid[1]} grid scaled to the input; "
                                       f"{cam.ms:.1f} ms for this frame")
        elif cam is not None:  # the probe could not answer on this layer: it says why
            self.input_view.set_rgb(view)
            caption = "no Grad-CAM here (hover)"
            self.input_view.setToolTip(getattr(cam, "text", ""))
        elif result.class_map is not None and self.show_class_map:
            self.input_view.set_rgb(blend_class_map(view, result.class_map, self._palette,
                                                    result.class_map_confidence))
            caption = f"class map over the input ({view.shape[1]}\u00d7{view.shape[0]})"
        else:
            self.input_view.set_rgb(view)
            caption = f"the input it sees ({view.shape[1]}\u00d7{view.shape[0]})"
        if self.input_caption.text() != caption:
            self.input_caption.setText(caption)
