"""The main window: four model panels over the live plots and the comparison table.

Frames reach the window through :class:`~gui.bridge.EngineBridge`, which keeps only the newest
result; a 30 Hz timer draws it when it is new (the arrival of results never triggers drawing). The
plots and the table, which change slowly, are refreshed at most five times a second.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

from PySide6.QtCore import QByteArray, QSize, Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QMainWindow,
    QSizePolicy,
    QSplitter,
    QStatusBar,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine.api import (
    AnalysisJob,
    DownloadCifar10Job,
    EngineEvent,
    Error,
    ErrorCode,
    JobEnded,
    JobOutcome,
    JobProgress,
    LineupJob,
    MetricsSnapshot,
    ModelUpdated,
    Notice,
    RobustnessJob,
    SessionReady,
    SourceEnded,
    SourceStarted,
    TopImagesJob,
    WeightsKind,
    backend_label,
    comparison_specs,
    describe,
    display_name,
    get_spec,
    lineup,
    lineup_choices,
)
from gui import style
from gui.analysis_view import AnalysisView
from gui.bridge import EngineBridge
from gui.channel_view import ChannelView
from gui.comparison_table import ComparisonTable, table_entries
from gui.elided import ElidedLabel
from gui.help_view import HelpView
from gui.image_canvas import ImageCanvas
from gui.imaging import agreement
from gui.job_bar import JobBar
from gui.label_picker import LabelPicker
from gui.message_bar import MessageBar, with_fix
from gui.model_panel import ModelPanel
from gui.overview_view import OverviewView
from gui.pacing import CostRecorder, StallMeter
from gui.panel_area import PanelArea
from gui.pinned import Pinned
from gui.plots import LivePlots, PlotModel, pipeline_fps_text
from gui.robustness_view import RobustnessView
from gui.settings import open_settings
from gui.source_bar import CIFAR_FILTER, SourceBar, describe_target, target_from_paths
from gui.statistics_view import StatisticsView

REDRAW_MS = 33  # at most 30 redraws a second
# at most 15 while pictures run as fast as the networks go (a data set): see open_source
MEASURE_REDRAW_MS = 66
# a long line of the status bar's counters (_update_counters), which sizes them once: a video's
# frame numbers may pass it, and then the line's left end is cut
COUNTERS_LONGEST = "frame 99999 \u00b7 99.9 fps (ended) \u00b7 shown 99999/99999 \u00b7 dropped 9999 + 99999 " \
    "\u00b7 longest stall 999 ms"
STEP_GAP_MS = 15  # between two steps of work spread over several event-loop passes
SLOW_REFRESH_S = 0.2  # plots and table: at most 5 a second (they change slowly, and cost most)
COMPACT_HEIGHT = 900  # a shorter window shows the table in a tab of its own, not under the plots
DESIGNED_SIZE = QSize(1600, 1000)
SLOW_PART_BUDGET_MS = 6.0  # a tick whose frame took longer than this leaves the slow parts to the next


def available_devices() -> list[str]:
    import torch

    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def _headless() -> bool:
    return QGuiApplication.platformName() in ("offscreen", "minimal")


def default_size() -> QSize:
    """1600x1000, the size the layout is designed for, or what fits a smaller screen."""
    screen = QGuiApplication.primaryScreen()
    if screen is None or _headless():
        return DESIGNED_SIZE  # no real screen (tests, screenshots): the designed size
    return fit_size(screen.availableGeometry().size())


def fit_size(available: QSize) -> QSize:
    """The designed size within 95% of the screen's free area: the rest is the window manager's
    frame and title bar (at 1366x768, 1298x730 plus a title bar fits)."""
    return DESIGNED_SIZE.boundedTo(available * 0.95)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 3)


class MainWindow(QMainWindow):
    def __init__(self, profile: str = "cifar10", device: str = "cpu", settings=None,
                 bridge: EngineBridge | None = None, weights: dict[str, str] | None = None,
                 precision: str = "auto", backend: str = "auto") -> None:
        super().__init__()
        self.setWindowTitle("CNN Arena \u2014 LeNet-5 \u00b7 AlexNet \u00b7 VGG \u00b7 ENet, side by side")
        self.settings = settings if settings is not None else open_settings()
        self.profile, self.device = profile, device
        self.bridge = bridge or EngineBridge(profile, device, self, weights=weights,
                                             models=self._lineup_names(profile), precision=precision,
                                             backend=backend)
        self.session: SessionReady | None = None
        self.layer_choice: dict[str, str] = {}  # model -> layer the person picked (kept across sessions)
        self.last_snapshot: MetricsSnapshot | None = None
        self.frames_shown = 0
        self._counted_processed = 0  # the engine's count of answered frames when one was last counted as shown
        self.shown_frame_id: int | None = None
        self.errors: list[str] = []
        self.shown_result = None  # the FrameResult on screen
        self._original: OriginalView | None = None
        self.statistics: StatisticsView | None = None
        self._help: HelpView | None = None
        self._pictures = False  # the source is still pictures: the status shows which one is on screen
        self._pictures_total: int | None = None
        self.source_errors: list[str] = []  # sources that could not be opened (a command line's --source)
        self.started_at = time.monotonic()
        self.redraw_cost = CostRecorder()
        self.closing_hooks: list[Callable[[], None]] = []
        self.engine_stopped_cleanly: bool | None = None
        self._pending_target = None
        self._slow_dirty = False
        self._slow_at = 0.0
        self._filling = False
        self._cards_due: list[ModelUpdated] = []  # cards the engine re-made while the panels were filled
        self._closed = False
        self._status_is_error = False
        self._resume_after_analysis = False
        self._label_check = False  # whether the next frame drawn tells if the source labels itself
        self.gradcam_on = False
        self._channel_wanted: tuple[str, int] | None = None
        # a finished job goes to the handler of its type; a new study's view adds its own (route_job)
        self._job_routes: dict[type, Callable[[JobEnded], None]] = {
            DownloadCifar10Job: self._cifar10_downloaded, TopImagesJob: self._top_images_ended,
            RobustnessJob: self._robustness_ended, AnalysisJob: self._analysis_ended,
            LineupJob: self._analysis_ended}
        self._channel_view: ChannelView | None = None

        self.source_bar = SourceBar(self.settings, self, devices=available_devices())
        self.addToolBar(self.source_bar)
        self.source_bar.set_profile(profile)
        self.source_bar.set_device(device)
        self.source_bar.set_precision(precision)
        self.source_bar.set_backend(backend)

        self.panel_row = QWidget(self)
        self.panel_layout = QHBoxLayout(self.panel_row)
        self.panel_layout.setContentsMargins(6, 6, 6, 0)
        self.panel_layout.setSpacing(6)
        self.panels: list[ModelPanel] = []
        self._ensure_panels(len(comparison_specs(profile)))
        self.plots = LivePlots(self)
        self._slow_parts = list(self.plots.all)
        self._slow_part = 0
        self.table = ComparisonTable(self)
        self.table.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        # Under the panels, tabs: "Live" holds the plots and, where the window is tall enough, the
        # table under them; on a short screen (1366x768) the table is a tab of its own, so that
        # neither is squeezed to a few pixels (see _arrange_bottom).
        self.live_tab = QWidget(self)
        self.live_layout = QVBoxLayout(self.live_tab)
        self.live_layout.setContentsMargins(6, 4, 6, 2)
        self.live_layout.setSpacing(4)
        self.live_layout.addWidget(self.plots, 1)
        self.live_layout.addWidget(self.table)
        self.bottom_tabs = QTabWidget(self)
        self.bottom_tabs.setDocumentMode(True)
        self.bottom_tabs.addTab(self.live_tab, "Live")
        self.bottom_tabs.setTabToolTip(0, "Live plots of this source (and the comparison table, on a tall window)")
        self.analysis_view = AnalysisView(self)
        self.bottom_tabs.addTab(self.analysis_view, "Analysis")
        self.bottom_tabs.setTabToolTip(1, "The survey's claims measured on this machine: figures and verdicts")
        self.analysis_view.measure_requested.connect(self._measure)
        self.analysis_view.cached_requested.connect(self._show_cached_analysis)
        self.analysis_view.export_requested.connect(self._export_report)
        self.overview_view = OverviewView(self)
        self.bottom_tabs.addTab(self.overview_view, "Overview")
        self.bottom_tabs.setTabToolTip(self.bottom_tabs.count() - 1, "Every layer of every network, aligned by depth")
        self.overview_view.layer_clicked.connect(self._overview_clicked)
        self._overview_was_on = False
        self.bottom_tabs.currentChanged.connect(lambda _index: self._overview_shown())
        self.robustness_view = RobustnessView(self)
        self.bottom_tabs.addTab(self.robustness_view, "Robustness")
        self.bottom_tabs.setTabToolTip(self.bottom_tabs.count() - 1,
                                       "Perturb what the networks see, live; and the robustness bench's curves")
        self.robustness_view.perturbation_changed.connect(self._perturbation_changed)
        self.robustness_view.bench_requested.connect(self._run_robustness)
        self.bottom_tabs.currentChanged.connect(lambda _index: self._mark_slow_dirty())
        self.bottom_tabs.currentChanged.connect(lambda _index: self._refresh_analysis_tab())
        self._analysis_stale = False
        self._compact: bool | None = None
        self.splitter = QSplitter(Qt.Orientation.Vertical, self)
        self.splitter.setChildrenCollapsible(False)
        self.panel_area = PanelArea(self.panel_row, self)
        for widget, stretch in ((self.panel_area, 2), (self.bottom_tabs, 1)):
            self.splitter.addWidget(widget)
            self.splitter.setStretchFactor(self.splitter.count() - 1, stretch)
        self.message_bar = MessageBar(self)
        central = QWidget(self)
        central_layout = QVBoxLayout(central)
        central_layout.setContentsMargins(0, 0, 0, 0)
        central_layout.setSpacing(0)
        central_layout.addWidget(self.message_bar)
        central_layout.addWidget(self.splitter, 1)
        self.setCentralWidget(central)

        self.status_text = ElidedLabel("Loading the networks\u2026", self)
        self.status_text.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        # Both labels change with every refresh. Pinned, a new text stays inside them: otherwise each
        # one re-lays out the status bar and through it the window, whose layout then re-places the
        # toolbar and the central widget. The counters ask for room for their longest line but take
        # less (elided, whole in the tooltip) when a job's progress shares the bar: at a fixed width
        # the two together widened a 1366-pixel window to 1450.
        self.counters = ElidedLabel(COUNTERS_LONGEST, self)
        self.counters.setObjectName("dim")
        self.counters.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.counters.setMinimumWidth(160)
        self.counters.setToolTip(" ")  # its own tooltip (_stall_text), never the elided line
        status = QStatusBar(self)
        status.setSizeGripEnabled(False)
        self.job_bar = JobBar(self)
        self.job_bar.cancel_requested.connect(self.bridge.cancel_job)
        self.label_picker = LabelPicker(self)
        self.label_picker.label_chosen.connect(self._label_chosen)
        status.addWidget(Pinned(self.status_text, self), 1)
        status.addWidget(self.job_bar)
        status.addWidget(self.label_picker)
        status.addPermanentWidget(Pinned(self.counters, self), 1)
        self.counters.setText("")
        self.setStatusBar(status)
        self.setAcceptDrops(True)
        # No explicit minimum size: the layout's own (about 950x700, for a 1366x768 screen) keeps
        # every row and panel from being squeezed into the next.

        self.source_bar.source_chosen.connect(self.open_source)
        self.source_bar.image_pasted.connect(self.show_image)
        self.source_bar.play_pause.connect(self.toggle_play)
        self.source_bar.step.connect(self.step)
        self.source_bar.step_back.connect(self.step_back)
        self.source_bar.reset_stats.connect(self.reset_stats)
        self.source_bar.profile_chosen.connect(self._profile_chosen)
        self.source_bar.device_chosen.connect(self._device_chosen)
        self.source_bar.precision_chosen.connect(self._precision_chosen)
        self.source_bar.backend_chosen.connect(self._backend_chosen)
        self.source_bar.per_channel_toggled.connect(self._per_channel)
        self.source_bar.gradcam_toggled.connect(self._gradcam)
        self.source_bar.message.connect(self.set_status)
        self.table.message.connect(self.set_status)
        self.table.statistics_requested.connect(self.show_statistics)
        self.source_bar.help_requested.connect(self.show_help)
        self.source_bar.cifar_download_requested.connect(self._download_cifar10)
        self.bridge.session_ready.connect(self._on_session)
        self.bridge.event.connect(self._on_event)

        self.redraw_timer = QTimer(self)
        self.redraw_timer.setInterval(REDRAW_MS)
        self.redraw_timer.timeout.connect(self._redraw)
        self.stall_meter = StallMeter(10, self)
        self._restore()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, source=None) -> None:
        """Start the engine (the networks load in the background) and, once loaded, ``source``."""
        self._pending_target = source
        self.bridge.start()
        self.redraw_timer.start()
        self.stall_meter.start()

    def _restore(self) -> None:
        geometry = self.settings.value("window/geometry")
        # Without a real screen (tests, screenshots) a saved geometry would be clamped to the
        # platform's dummy 800x600 screen: the designed size is used instead.
        self.restored_geometry = (isinstance(geometry, QByteArray) and not geometry.isEmpty()
                                  and not _headless())
        if self.restored_geometry:
            self.restoreGeometry(geometry)
            # The layout is designed for 1600x1000 and fits down to a 1366x768 screen: a saved size
            # under 1400x900 (say, from a run on a small virtual screen) is not reopened where the
            # screen has room for more.
            floor = QSize(1400, 900).boundedTo(default_size())
            if self.width() < floor.width() or self.height() < floor.height():
                self.resize(self.size().expandedTo(floor))
        else:
            self.resize(default_size())
        # Before the first layout: with the table still under the plots, a short window's layout
        # asks for more height than the screen has, and the window grew past its bottom edge.
        self._arrange_bottom(self.height() < COMPACT_HEIGHT)
        state = self.settings.value("window/split")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.splitter.restoreState(state)
        elif self.height() < COMPACT_HEIGHT:  # the panels whole, the bottom what is left
            room = self.height() - self.source_bar.sizeHint().height() - self.statusBar().sizeHint().height()
            top = self.panel_area.row_height()
            self.splitter.setSizes([top, max(1, room - top - self.splitter.handleWidth())])
        else:
            self.splitter.setSizes([480, 410])  # the bottom: plots and, on a tall window, the table
        tab = str(self.settings.value("window/tab", "") or "")
        for index in range(self.bottom_tabs.count()):
            if self.bottom_tabs.tabText(index) == tab:
                self.bottom_tabs.setCurrentIndex(index)
        per_channel = str(self.settings.value("features/per_channel", "false")).lower() == "true"
        self.source_bar.scale_action.setChecked(per_channel)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._arrange_bottom(self.height() < COMPACT_HEIGHT)

    def _arrange_bottom(self, compact: bool) -> None:
        """The table under the plots (tall window) or in a tab of its own (short window)."""
        if compact == self._compact:
            return
        self._compact = compact
        current = self.bottom_tabs.currentWidget()
        if compact:
            self.live_layout.removeWidget(self.table)
            self.bottom_tabs.insertTab(1, self.table, "Table")
            self.bottom_tabs.setTabToolTip(1, "The comparison table: what papers print, measured here")
            self.table.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
            self.table.set_whole(False)
        else:
            index = self.bottom_tabs.indexOf(self.table)
            if index >= 0:
                self.bottom_tabs.removeTab(index)
            self.table.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
            self.table.set_whole(True)
            self.live_layout.addWidget(self.table)
            self.table.show()
            if current is self.table:
                current = self.live_tab
        self.bottom_tabs.setCurrentWidget(current)

    def _measure(self, max_batch: int, precision: str, fresh: bool, backends: tuple[str, ...] = ()) -> None:
        if self.bridge.analyze(max_batch, precision, fresh, tuple(backends), self.analysis_view.lineup):
            self.analysis_view.set_busy(True)
            if not self.bridge.paused:
                self.source_bar.set_playing(False)  # the engine pauses the source for the measurement
                self._resume_after_analysis = True
        else:
            self.set_status("Another job is running: wait for it, or cancel it in the status bar", True)

    def _perturbation_changed(self, perturbation) -> None:
        self.bridge.set_perturbation(perturbation)
        self.set_status(f"Every frame is perturbed: {perturbation.label}" if perturbation is not None
                        else "No perturbation: the networks see the frames as they are")

    def _input_clicked(self, fx: float, fy: float) -> None:
        self.robustness_view.move_occluder(fx, fy)

    def _study_channel(self, model: str, layer: str, channel: int) -> None:
        """The top 9 test pictures of a channel: a job over 2,000 CIFAR-10 test images (cached per
        weights and layer), then the grid."""
        if self.profile != "cifar10":
            self.set_status("What a channel looks for is searched in the CIFAR-10 test set: the cifar10 profile", True)
            return
        # The data set playing, or the one remembered; a folder is where the file dialog starts (it
        # may be the home folder: searched as a data set, it failed on '.pyenv')
        target = self.bridge.target
        playing = isinstance(target, str) and describe_target(target).split(" ")[0] == "dataset"
        path = target if playing else self.source_bar.cifar_start_path()
        if not playing and not os.path.isfile(path):
            path, _ = QFileDialog.getOpenFileName(self, "The CIFAR-10 test set to search", path, CIFAR_FILTER)
            if not path:
                return
        if self.bridge.top_images(model, layer, path):
            self._channel_wanted = (model, channel)
            self.set_status(f"Searching the CIFAR-10 test set for what {layer} channel {channel} looks for\u2026")
        else:
            self.set_status("Another job is running: wait for it, or cancel it in the status bar", True)

    def _run_robustness(self, images: int) -> None:
        if self.profile != "cifar10":
            self.set_status("The robustness bench runs in the cifar10 profile: its networks read 32x32 pictures",
                            True)
            return
        path, _ = QFileDialog.getOpenFileName(self, "The CIFAR-10 test set for the robustness bench",
                                              self.source_bar.cifar_start_path(), CIFAR_FILTER)
        if not path:
            return
        if self.bridge.robustness(path, images):
            self.robustness_view.set_busy(True)
            if not self.bridge.paused:
                self.source_bar.set_playing(False)
                self._resume_after_analysis = True
        else:
            self.set_status("Another job is running: wait for it, or cancel it in the status bar", True)

    def _refresh_analysis_tab(self) -> None:
        if self._analysis_stale and self.bottom_tabs.currentWidget() is self.analysis_view:
            self._analysis_stale = False
            self._show_cached_analysis()

    def _show_cached_analysis(self, max_batch: int | None = None, precision: str | None = None,
                              backends: tuple[str, ...] | None = None) -> None:
        view = self.analysis_view
        cached = self.bridge.cached_analysis(max_batch or view.max_batch.value(),
                                             precision or view.precision.currentText(),
                                             tuple(backends) if backends is not None else view.other_backends,
                                             view.lineup)
        if cached is not None:
            view.show_analysis(cached)
        else:
            view.clear()

    def _export_report(self) -> None:
        analysis = self.analysis_view.analysis
        if analysis is None:
            return
        start = str(self.settings.value("last_report_dir", "") or os.path.expanduser("~"))
        parent = QFileDialog.getExistingDirectory(self, "Export the analysis into a new folder inside…", start)
        if not parent:
            return
        self.settings.setValue("last_report_dir", parent)
        # a new folder of its own: nothing already in the chosen one is touched
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = os.path.join(parent, f"cnn-arena-analysis-{analysis.profile}-{stamp}")
        if not self.bridge.export_report(analysis, folder):
            self.set_status("Another job is running: wait for it, or cancel it in the status bar", True)

    def _mark_slow_dirty(self) -> None:
        self._slow_dirty = True

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if not self._closed:
            self._closed = True
            for hook in self.closing_hooks:
                hook()
            self.settings.setValue("window/geometry", self.saveGeometry())
            self.settings.setValue("window/split", self.splitter.saveState())
            self.settings.setValue("window/tab", self.bottom_tabs.tabText(self.bottom_tabs.currentIndex()))
            self.settings.setValue("features/per_channel", self.source_bar.scale_action.isChecked())
            self.settings.sync()
            self.redraw_timer.stop()
            self.stall_meter.stop()
            self.hide()  # gone at once, even while the engine finishes what it is doing
            self.engine_stopped_cleanly = self.bridge.shutdown(1.8)
        super().closeEvent(event)

    # -- status --------------------------------------------------------------------------------

    def set_status(self, text: str, error: bool = False) -> None:
        """One line in the status bar; an error also whole, with its fix, in the message bar."""
        line = text.strip().splitlines()[0] if text.strip() else ""
        if error:
            self.message_bar.show_message(text.strip())
        if self.status_text.text() != line:
            self.status_text.setText(line)
        if self.status_text.toolTip() != text:
            self.status_text.setToolTip(text)
        if error != self._status_is_error:  # a new style sheet re-polishes the label: only on a change
            self.status_text.setStyleSheet(f"color: {style.BAD};" if error else "")
        self._status_is_error = error

    def _update_counters(self) -> None:
        snapshot = self.last_snapshot
        self.plots.fps.set_state(self.bridge.paused, self.bridge.source_ended)
        fps = pipeline_fps_text(snapshot, self.bridge.paused, self.bridge.source_ended)
        frame = "\u2013" if self.shown_frame_id is None else str(self.shown_frame_id)
        # short, so that the source's name beside it fits at 1366 pixels; the tooltip says what each counts
        self.counters.setText(f"frame {frame} \u00b7 {fps} \u00b7 shown {self.frames_shown}/{self.bridge.processed}"
                              f" \u00b7 dropped {self.bridge.dropped} + {self.bridge.results_skipped} \u00b7 "
                              + self._stall_text())

    def _stall_text(self) -> str:
        """The longest main-thread stall since the first frame was drawn (what a person watching
        the networks could have seen), the start-up's in the tooltip."""
        meter = self.stall_meter
        if meter.first_frame_at is None:
            return f"starting: longest stall {meter.max_stall_ms:.0f} ms"
        flat_out = self.redraw_timer.interval() == MEASURE_REDRAW_MS
        tip = ("Frame: the number of the frame on screen. fps: frames the engine answers a second.\n"
               "Shown N/M: the frames the window drew of the M the engine answered (it draws at most "
               f"{1000 // self.redraw_timer.interval()} a second"
               + (", as pictures run as fast as the networks go: drawing less leaves them more of the machine"
                  if flat_out else "") + ").\nDropped A + B: A by the engine, frames a newer one replaced "
               "before the networks saw them; B by the display, answers a newer one replaced before they "
               "were drawn.\nLongest stall: the longest time the window did not respond since the first "
               f"frame was drawn ({meter.first_frame_at:.1f} s after start): "
               f"{meter.max_stall_after_first_frame_ms:.0f} ms; since start, loading included: "
               f"{meter.max_stall_ms:.0f} ms.")
        if self.counters.toolTip() != tip:
            self.counters.setToolTip(tip)
        return f"longest stall {meter.max_stall_after_first_frame_ms:.0f} ms"

    # -- sources and controls ------------------------------------------------------------------

    def open_source(self, target) -> None:
        if self.session is None:
            self._pending_target = target
            self.set_status(f"{describe_target(target)} opens once the networks are loaded\u2026")
            return
        what = describe_target(target)
        live = what.startswith(("stream", "camera"))
        self.message_bar.dismiss()  # the person acted: an error about the last source is over
        # a class named for the last source is not this one's; a data set names its own
        self.label_picker.set_source_labelled(what.split(" ")[0] == "dataset")
        self.set_status(f"{'Connecting to' if live else 'Opening'} {what}\u2026")
        if self.bridge.paused:
            self.bridge.resume()
        self.source_bar.set_playing(True)
        # Pictures stay on screen a while; a data set runs as fast as the networks go (it is there
        # to measure), and a video at its own rate.
        kind = "images" if isinstance(target, list) else what.split(" ")[0]
        interval = self.source_bar.slideshow_interval if kind in ("images", "folder", "image") else 0.0
        # Pictures that run flat out change faster than anyone can follow at any redraw rate, and
        # each redraw holds the interpreter lock the engine's thread needs between two networks:
        # the window then draws half as often. Measured on 2 cores, the CIFAR-10 test set at
        # 1600x1000, runs in turn: 57.3 and 59.2 frames/s at 30 redraws a second, 70.0 and 70.4 at 15.
        flat_out = interval == 0.0 and kind in ("images", "folder", "image", "dataset")
        self.redraw_timer.setInterval(MEASURE_REDRAW_MS if flat_out else REDRAW_MS)
        self.bridge.set_source(target, interval)

    def show_image(self, image, name: str = "pasted image") -> None:
        self.label_picker.set_source_labelled(False)  # a new picture: unnamed
        if self.bridge.paused:
            self.bridge.resume()
        self.set_status(f"Showing the {name} ({image.shape[1]}\u00d7{image.shape[0]})")
        self.bridge.submit_image(image, name)

    def toggle_play(self) -> None:
        if self.bridge.source_ended:
            if self.bridge.paused:
                self.bridge.resume()
            if self.bridge.replay():
                self.source_bar.set_playing(True)
                self.set_status("Playing again from the start")
            return
        if self.bridge.paused:
            self.bridge.resume()
            self.source_bar.set_playing(True)
            self.set_status("Playing")
        else:
            self.bridge.pause()
            self.source_bar.set_playing(False)
            self.set_status("Paused: Space plays, Right arrow steps one frame")

    def reset_stats(self) -> None:
        self.bridge.reset_stats()
        self.plots.reset()
        self.last_snapshot = None
        self.set_status("Statistics reset: they start again with the next frame")

    def _download_cifar10(self) -> None:
        if self.bridge.download_cifar10():
            self.set_status("Downloading CIFAR-10\u2026 (it opens when it is done)")
        else:
            self.set_status("Another download is running: wait for it, or cancel it", True)

    def _lineup_names(self, profile: str) -> list[str]:
        """The line-up of ``profile`` with the networks the person chose (a VGG depth), remembered."""
        chosen = [str(self.settings.value(key)) for key in self.settings.allKeys()
                  if key.startswith(f"lineup/{profile}/")]
        return [spec.name for spec in lineup(profile, chosen)]

    def _lineup_chosen(self, model: str) -> None:
        """Put ``model`` in its family's place in the comparison (say VGG-19-BN for VGG-16)."""
        spec = get_spec(model, self.profile)
        self.settings.setValue(f"lineup/{self.profile}/{spec.family}", model)
        self.set_status(f"Loading {spec.display}\u2026")
        self.bridge.configure(models=self._lineup_names(self.profile))

    def _label_chosen(self, label: int | None) -> None:
        self.bridge.set_label(label)
        if label is not None and self.session is not None:
            name = self.session.models[0].class_names[label]
            self.set_status(f"The frames that follow are counted as {name}; \u00d7 stops")

    def show_help(self) -> None:
        if self._help is None:
            self._help = HelpView(self)
        self._help.show()
        self._help.raise_()

    def show_statistics(self) -> None:
        if self.statistics is None:
            self.statistics = StatisticsView(self, self.bridge.cell_examples, self._show_kept)
            if self.session is not None:
                self.statistics.set_models(list(self.session.models))
        self.statistics.show_snapshot(self.last_snapshot)
        self.statistics.show()
        self.statistics.raise_()

    def _show_kept(self, frame_id: int) -> bool:
        shown = self.bridge.show_kept(frame_id)
        if shown:
            self.source_bar.set_playing(False)
        return shown

    def show_original(self) -> None:
        """The frame on screen as it was loaded, before any network's crop and resize."""
        result = self.shown_result
        if result is None or result.frame is None:
            self.set_status("No picture on screen yet")
            return
        if self._original is None:
            self._original = OriginalView(self)
        self._original.show_frame(result.frame, result.source)

    def step_back(self) -> None:
        self.source_bar.set_playing(False)
        if not self.bridge.step_back():
            self.set_status("No earlier frame of this source is kept", False)

    def step(self) -> None:
        if not self.bridge.paused:
            self.bridge.pause()
            self.source_bar.set_playing(False)
        self.bridge.step()

    def _profile_chosen(self, profile: str) -> None:
        if profile != self.profile:
            self.profile = profile
            self.set_status(f"Loading the {profile} networks\u2026")
            # Labels are class indices of the profile a source was opened with: stop it now and
            # open it again with the new profile's classes once its networks are loaded.
            if self.bridge.target is not None and not self.bridge.source_ended:
                self._pending_target = self.bridge.target
                self.bridge.clear_source()
            self.bridge.configure(profile=profile, models=self._lineup_names(profile))

    def _device_chosen(self, device: str) -> None:
        if device != self.device:
            self.device = device
            self.set_status(f"Moving the networks to {device}\u2026")
            self.bridge.configure(device=device)

    def _precision_chosen(self, precision: str) -> None:
        self.set_status(f"Loading the networks again in {precision}\u2026")
        self.bridge.configure(precision=precision)

    def _backend_chosen(self, backend: str) -> None:
        how = "on the fastest backend, measured" if backend == "auto" else f"on {backend_label(backend)}"
        self.set_status(f"Loading the networks again {how} (a first export takes seconds a network)\u2026")
        self.bridge.configure(backend=backend)

    @property
    def _overview_on(self) -> bool:
        return self.bottom_tabs.currentWidget() is self.overview_view

    def _request(self, model: str) -> None:
        """Ask the engine for what ``model``'s panel and the tabs on screen need: the picked layer's
        activations, its Grad-CAM when that is on, every layer's summary when the Overview shows."""
        panel = next((p for p in self.panels if p.name == model), None)
        if panel is None or not panel.layer:
            return
        overview = self.overview_view.layers_for(model) if self._overview_on else ()
        panel.capture_generation = self.bridge.set_capture(model, panel.layer, self.gradcam_on, panel.gradcam_target,
                                                           overview)

    def _overview_shown(self) -> None:
        """The Overview tab appeared or went: the engine summarises every layer only while it shows."""
        on = self._overview_on
        if on == self._overview_was_on:
            return
        self._overview_was_on = on
        for panel in self.panels:
            if panel.info is not None:
                self._request(panel.name)
        if self.bridge.paused or self.bridge.source_ended or self.bridge.target is None:
            self.bridge.rerun_last()  # nothing new is coming: the frame on screen answers the new request

    def _overview_clicked(self, model: str, layer: str) -> None:
        panel = next((p for p in self.panels if p.name == model), None)
        if panel is not None and panel.select_layer(layer):
            self.set_status(f"{panel.info.display if panel.info else model}: {layer} in its panel")

    def _target(self, model: str) -> int | None:
        panel = next((p for p in self.panels if p.name == model), None)
        return panel.gradcam_target if panel is not None else None

    def _gradcam_target(self, model: str, target) -> None:
        panel = next((p for p in self.panels if p.name == model), None)
        if panel is None or not panel.layer:
            return
        self._request(model)
        if self.bridge.paused or self.bridge.source_ended or self.bridge.target is None:
            self.bridge.rerun_last()
        names = panel.info.class_names if panel.info else ()
        self.set_status(f"{panel.info.display if panel.info else model}: Grad-CAM of "
                        f"\u201c{names[target]}\u201d" if target is not None and target < len(names)
                        else f"{model}: Grad-CAM of each frame's top-1 answer")

    def _gradcam(self, on: bool) -> None:
        """Grad-CAM on every panel, for the layer in its picker; switching it on moves each picker
        to the network's Grad-CAM layer (its last convolution stage) unless a layer was picked."""
        self.gradcam_on = on
        for panel in self.panels:
            panel.set_gradcam(on)
            info = panel.info
            if info is None:
                continue
            if on and info.gradcam_layer and panel.layer != info.gradcam_layer:
                panel.select_layer(info.gradcam_layer)  # its layer_requested asks for both
            elif panel.layer:
                self._request(info.name)
        if self.bridge.paused or self.bridge.source_ended or self.bridge.target is None:
            self.bridge.rerun_last()
        self.set_status("Grad-CAM on: each network's evidence for its answer, over its input (one backward pass "
                        "per network and frame)" if on else "Grad-CAM off")

    def _per_channel(self, on: bool) -> None:
        for panel in self.panels:
            panel.features.set_per_channel(on)

    def _layer_requested(self, model: str, layer: str) -> None:
        self.layer_choice[model] = layer
        self._request(model)
        if self.bridge.paused or self.bridge.source_ended or self.bridge.target is None:
            self.bridge.rerun_last()  # nothing new is coming: show the new layer on the same frame

    def _weights_requested(self, model: str, path: str) -> None:
        if path:
            self.set_status(f"Loading {display_name(path)} into {model}\u2026")
        else:
            self.set_status(f"Back to the default weights of {model}\u2026")
        self.bridge.load_weights(model, path or None)

    def _runtime_requested(self, model: str, backend: str) -> None:
        where = f"on {backend_label(backend)}" if backend else "as the toolbar says"
        self.set_status(f"Loading {model} again {where}\u2026 (the other networks keep running)")
        self.bridge.set_runtime(model, backend or None)

    def _download_requested(self, model: str) -> None:
        if self.bridge.download_weights(model):
            self.set_status(f"Downloading the ImageNet weights of {model}\u2026")
        else:
            self.set_status("Another download is running: wait for it, or cancel it", True)

    # -- drag and drop -------------------------------------------------------------------------

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt's name
        mime = event.mimeData()
        if mime.hasImage() or (mime.hasUrls() and any(u.isLocalFile() for u in mime.urls())):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt's name
        mime = event.mimeData()
        paths = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()] if mime.hasUrls() else []
        target = target_from_paths(paths)
        if target is not None:
            self.source_bar.choose(target)
            event.acceptProposedAction()
        elif mime.hasImage():
            from gui.source_bar import qimage_to_rgb
            try:
                self.show_image(qimage_to_rgb(mime.imageData()), "dropped image")
                event.acceptProposedAction()
            except (ValueError, TypeError) as e:
                self.set_status(f"Cannot use the dropped image: {e}", True)

    # -- engine events -------------------------------------------------------------------------

    def _ensure_panels(self, count: int) -> None:
        while len(self.panels) < count:
            panel = ModelPanel(len(self.panels), self.panel_row)
            panel.layer_requested.connect(self._layer_requested)
            panel.weights_requested.connect(self._weights_requested)
            panel.download_requested.connect(self._download_requested)
            panel.original_requested.connect(self.show_original)
            panel.input_clicked.connect(self._input_clicked)
            panel.gradcam_target_requested.connect(self._gradcam_target)
            panel.channel_study_requested.connect(self._study_channel)
            panel.lineup_requested.connect(self._lineup_chosen)
            panel.runtime_requested.connect(self._runtime_requested)
            self.panel_layout.addWidget(panel, 1)
            self.panels.append(panel)
        for i, panel in enumerate(self.panels):
            panel.setVisible(i < count)

    def _on_session(self, session: SessionReady) -> None:
        self.session = session
        self._cards_due = []
        # this profile's analysis, if this machine measured it before: read and drawn (eight plots,
        # tens of milliseconds) when its tab is shown, not in the middle of loading the networks
        self._analysis_stale = True
        self._refresh_analysis_tab()
        self.profile, self.device = session.profile, session.device
        self._show_settings(session)
        self._ensure_panels(len(session.models))
        if self.statistics is not None:
            self.statistics.set_models(list(session.models))
        if session.models and self.label_picker.classes != session.models[0].class_names:
            self.label_picker.set_classes(session.models[0].class_names)
        per_channel = self.source_bar.scale_action.isChecked()
        # Each step below makes Qt repaint a large part of the window; run one step per pass of the
        # event loop, so that no single pass repaints everything at once (a visible stall).
        steps = []
        for panel, info in zip(self.panels, session.models):
            def fill(panel=panel, info=info) -> None:
                panel.set_info(info, self.layer_choice.get(info.name))
                panel.set_lineup(lineup_choices(session.profile, info.family))
                panel.features.set_per_channel(per_channel)
                if self.gradcam_on and info.gradcam_layer and not self.layer_choice.get(info.name):
                    panel.select_layer(info.gradcam_layer)  # asks for the layer and its Grad-CAM
                elif panel.layer and (panel.layer != info.default_layer or self.gradcam_on or self._overview_on):
                    self._request(info.name)
                panel.set_gradcam(self.gradcam_on)
            steps.append(fill)
        num_classes = len(session.models[0].class_names) if session.models else 10
        plot_models = [PlotModel(m.name, m.display, style.model_color(i),
                                 m.complexity.macs if m.complexity else None,
                                 m.test_top1 if m.test_top1 is not None else m.published_top1, m.weights,
                                 m.test_top1 is None and m.published_top1 is not None)
                       for i, m in enumerate(session.models)]
        self.plots.remember(plot_models, num_classes)
        steps.append(lambda: self.overview_view.canvas.set_models(list(session.models)))
        steps.extend(lambda plot=plot: plot.set_models(plot_models, num_classes) for plot in self.plots.all)
        steps.append(lambda: self.table.set_entries(
            table_entries(session.profile, session.models, None)))
        self.last_snapshot = None
        self._filling = True  # panels may show the old session's networks until the steps are done
        self._run_in_turn(steps, lambda: self._session_ready(session))

    def _show_settings(self, session: SessionReady) -> None:
        """The toolbar's boxes show what runs: a refused change (bf16 on a CPU without it) goes back."""
        self.source_bar.set_profile(session.profile)
        self.source_bar.set_device(session.device)
        if session.precision:
            self.source_bar.set_precision(session.precision)
        if session.backend:
            self.source_bar.set_backend(session.backend)

    @property
    def ready(self) -> bool:
        """The networks are loaded and every panel shows them."""
        return self.session is not None and not self._filling

    def _run_in_turn(self, steps: list, then) -> None:
        """Run ``steps`` one at a time, then ``then``, leaving the event loop a few milliseconds
        between two steps: time to repaint what the last one changed and to serve the timers. (A
        zero-delay timer would not do: Qt posts it as an event, handled in the same batch as the
        repaint events of the step before, so the steps' costs would add up without a pause.)"""
        if not steps:
            then()
            return
        steps[0]()
        # with the window as the timer's context: a window closed meanwhile cancels the rest
        QTimer.singleShot(STEP_GAP_MS, self, lambda: self._run_in_turn(steps[1:], then))

    def _update_card(self, event: ModelUpdated) -> None:
        """A network's card as the engine re-made it on live frames: the session's copy (which the
        report and the comparison table read), its panel and the status bar."""
        session, card = self.session, event.card
        if session is None or session.card(card.name) is None:
            return
        self.session = session.with_card(card)
        for panel in self.panels:
            panel.update_card(card)
        if not self._status_is_error:  # an error stays readable
            self.set_status(event.text)

    def _session_ready(self, session: SessionReady) -> None:
        if session is not self.session:
            return  # another session arrived meanwhile
        self._filling = False
        untrained = [m.display for m in session.models if m.weights == WeightsKind.UNTRAINED]
        note = (f" \u2014 UNTRAINED (random weights): {', '.join(untrained)}" if untrained else "")
        self.set_status(f"{len(session.models)} networks on {session.device} ({session.profile}){note}")
        target, self._pending_target = self._pending_target, None
        if target is not None:
            self.open_source(target)
        elif self.bridge.paused or self.bridge.source_ended or self.bridge.target is None:
            # nothing new is coming (new weights while paused): the frame on screen runs again
            self.bridge.rerun_last()
        elif self.bridge.target is None and self.bridge.latest is None:
            self.set_status("Ready: open an image, a folder, a video, a camera or the CIFAR-10 test set "
                            f"(or drop files here, or paste an image){note}")
        due, self._cards_due = self._cards_due, []  # after the lines above: the newest news last
        for event in due:
            self._update_card(event)

    def _on_event(self, event: EngineEvent) -> None:
        if isinstance(event, Error):
            self.errors.append(event.text)
            if event.code in (ErrorCode.SOURCE, ErrorCode.CAMERA):
                self.source_errors.append(event.text)
            if event.code in (ErrorCode.SESSION, ErrorCode.DEVICE) and self.session is not None:
                self.device = self.session.device
                self._show_settings(self.session)  # refused: the networks run as they were
            self.set_status(with_fix(event.text, event.code), True)
        elif isinstance(event, SourceStarted):
            self._label_check = True
            self.set_status(f"Playing {event.name}")
            for panel in self.panels:
                panel.reset_health()
            self.source_bar.set_playing(not self.bridge.paused)
            target = self.bridge.target
            self._pictures = isinstance(target, list) or (
                isinstance(target, str) and describe(target) in ("folder", "image", "dataset"))
            self._pictures_total = event.total
        elif isinstance(event, SourceEnded):
            if not self._status_is_error:  # an error about this source stays readable
                self.set_status(f"{event.text} \u2014 Play (Space) to run it again")
            self.source_bar.set_playing(False)
        elif isinstance(event, Notice):
            self.set_status(event.text)
        elif isinstance(event, ModelUpdated):
            if self._filling:  # the panels are being filled from the session's first cards
                self._cards_due.append(event)
            else:
                self._update_card(event)
        elif isinstance(event, JobProgress):
            self.job_bar.show_progress(event)
        elif isinstance(event, JobEnded):
            self.job_bar.end(event)
            if event.outcome != JobOutcome.FAILED:  # a failure also comes as an Error, which stays
                self.set_status(event.text)
            route = self._job_routes.get(type(event.job))
            if route is not None:
                route(event)

    def route_job(self, job_type: type, handler: Callable[[JobEnded], None]) -> None:
        """Call ``handler`` with every ``JobEnded`` of a job of ``job_type`` (done, cancelled or failed)."""
        self._job_routes[job_type] = handler

    def _cifar10_downloaded(self, event: JobEnded) -> None:
        if event.outcome == JobOutcome.DONE and event.result:
            self.source_bar.open_cifar_path(event.result)  # remembered, then played

    def _top_images_ended(self, event: JobEnded) -> None:
        if event.outcome != JobOutcome.DONE or event.result is None:
            return
        model, channel = self._channel_wanted or (event.result.model, 0)
        if self._channel_view is None:
            self._channel_view = ChannelView(self)
        label = next((m.display for m in self.session.models if m.name == model), model) \
            if self.session is not None else model
        self._channel_view.show_channel(event.result, channel, label)

    def _robustness_ended(self, event: JobEnded) -> None:
        self.robustness_view.set_busy(False)
        if event.outcome == JobOutcome.DONE and event.result is not None and self.session is not None:
            self.robustness_view.show_result(
                event.result, {m.name: m.display for m in self.session.models},
                {m.name: style.model_color(i) for i, m in enumerate(self.session.models)})
        else:
            self.robustness_view.summary.setText(event.text)
        self._play_on_after_job()

    def _analysis_ended(self, event: JobEnded) -> None:
        self.analysis_view.set_busy(False)
        if event.outcome == JobOutcome.DONE and event.result is not None:
            self.analysis_view.show_analysis(event.result)
        else:
            self._show_cached_analysis()
        self._play_on_after_job()

    def _play_on_after_job(self) -> None:
        if self._resume_after_analysis:
            self._resume_after_analysis = False
            self.source_bar.set_playing(not self.bridge.paused)

    # -- drawing -------------------------------------------------------------------------------

    def _redraw(self) -> None:
        payload = self.bridge.take_latest()
        now = time.perf_counter()
        if payload is not None:
            result, snapshot = payload
            self.last_snapshot = snapshot
            self._slow_dirty = True
            if result.ok and result.results and self.session is not None and not self._filling:
                self._draw_frame(result)
                # A frame run again (a step back, a new layer while paused) is drawn but was not
                # counted by the engine: "shown" counts only newly answered frames ("shown 51/48").
                processed = self.bridge.processed
                if processed > self._counted_processed:
                    self.frames_shown += 1
                    self._counted_processed = processed
                self.stall_meter.mark_first_frame()
        # A plot or the table in a tick with time left, not on top of an expensive frame (the
        # first frames of a session repaint everything and cost several times the usual); but
        # never put off for longer than two refresh periods, however slow the frames are.
        since = now - self._slow_at
        roomy = (time.perf_counter() - now) * 1000.0 < SLOW_PART_BUDGET_MS or since >= 2 * SLOW_REFRESH_S
        if self._slow_dirty and roomy and since >= SLOW_REFRESH_S / (len(self._slow_parts) + 1):
            self._slow_at = now
            if self._draw_slow():
                self._slow_dirty = False
        if payload is not None:
            self.redraw_cost.add((time.perf_counter() - now) * 1000.0)

    def _draw_frame(self, result) -> None:
        same = agreement({name: r.top1 for name, r in result.results.items()})
        names = self.session.models[0].class_names if self.session.models else ()
        truth = names[result.label] if result.label is not None and 0 <= result.label < len(names) else None
        total = len(result.results)
        if self._label_check and self.label_picker.chosen is None:  # the new source's first frame drawn
            self._label_check = False
            if result.label is not None:  # labelled by the source itself (class-named folders)
                self.label_picker.set_source_labelled(True)
        for panel in self.panels:
            r = result.results.get(panel.name)
            if r is not None:
                clean = result.clean_top1.get(panel.name) if result.clean_top1 is not None else None
                panel.show_result(result.frame_id, r, truth, same.get(panel.name, 0), total, result.generation,
                                  clean)
        if self._pictures and result.frame_id != self.shown_frame_id:  # "17 / 240 · cat_003.jpg"
            total = f" / {self._pictures_total}" if self._pictures_total else ""
            self.set_status(f"{result.frame_id + 1}{total} \u00b7 {result.source}")
        self.shown_frame_id = result.frame_id
        self.shown_result = result

    def _draw_slow(self) -> bool:
        """One of the slow parts (a plot, or the table) per call, in turn: their repaints cost a few
        milliseconds each, and doing all five in one tick was the window's longest regular stall."""
        snapshot = self.last_snapshot
        if snapshot is not None and self.session is not None:
            part = self._slow_part % (len(self._slow_parts) + 1)
            self._slow_part += 1
            if part < len(self._slow_parts):
                self._slow_parts[part].show_snapshot(snapshot)
            else:
                self.table.set_entries(table_entries(self.session.profile, self.session.models, snapshot))
                if self._overview_on and self.shown_result is not None:
                    self.overview_view.canvas.set_glances(
                        {name: r.probes.get("overview", {}) for name, r in self.shown_result.results.items()})
                if self.statistics is not None and self.statistics.isVisible():
                    self.statistics.show_snapshot(snapshot)
            self._update_counters()
            return part == len(self._slow_parts)  # a round is complete
        self._update_counters()
        return True

    # -- the run report ------------------------------------------------------------------------

    def report(self) -> dict:
        snapshot = self.last_snapshot
        models = snapshot.models if snapshot is not None else {}
        session = self.session
        return {
            "frames_shown": self.frames_shown,
            "frames_processed": self.bridge.processed,
            "frames_dropped": self.bridge.dropped + self.bridge.results_skipped,
            "frames_dropped_by_engine": self.bridge.dropped,
            "results_skipped_by_display": self.bridge.results_skipped,
            "pipeline_fps": _finite(snapshot.pipeline_fps) if snapshot is not None else None,
            "pipeline_fps_covers": "frames per second while frames kept coming, last 300 frames of the source",
            "source_errors": list(self.source_errors),
            "max_stall_ms": round(self.stall_meter.max_stall_ms, 1),
            "stalls_over_50ms": self.stall_meter.stalls_over_50ms,
            "max_stall_ms_after_first_frame": round(self.stall_meter.max_stall_after_first_frame_ms, 1),
            "first_frame_at_s": self.stall_meter.first_frame_at,
            "no_frame_because": self._no_frame_reason(),
            "long_stalls_at_s_ms": self.stall_meter.long_stalls,
            "latency_ms_p50": {name: _finite(s.p50_ms) for name, s in models.items()},
            "latency_ms_p95": {name: _finite(s.p95_ms) for name, s in models.items()},
            "running_top1": {name: _finite(s.top1) for name, s in models.items()},
            "redraws_per_s_max": 1000 // self.redraw_timer.interval(),  # 15 while pictures run flat out
            "redraw_ms_p50": _finite(self.redraw_cost.percentile(50)),
            "redraw_ms_p95": _finite(self.redraw_cost.percentile(95)),
            "last_frame_id": self.shown_frame_id,
            "errors": len(self.errors),
            "error_messages": self.errors[-20:],
            "profile": session.profile if session else self.profile,
            "device": session.device if session else self.device,
            "weights": {m.name: str(m.weights) for m in session.models} if session else {},
            "precision": {m.name: m.precision for m in session.models} if session else {},
            "backend": {m.name: m.backend for m in session.models} if session else {},
            "why": {m.name: "; ".join(n for n in (m.precision_note, m.backend_note) if n)  # the times auto measured
                    for m in session.models} if session else {},
            "source": describe_target(self.bridge.target) if self.bridge.target is not None else None,
            "duration_s": round(time.monotonic() - self.started_at, 2),
            "engine_stopped_cleanly": self.engine_stopped_cleanly,
        }


    def _no_frame_reason(self) -> str | None:
        """Why the window drew no frame (None when it drew one): a report with zero frames says so."""
        if self.frames_shown:
            return None
        if self.source_errors:
            return f"the source failed: {self.source_errors[0]}"
        if self.session is None:
            return "closed while the networks were still loading"
        if self.bridge.target is None:
            return "no source was opened"
        return "the source sent no frame before the window closed"


class OriginalView(QDialog):
    """The picture on screen as it was loaded, at up to its own size: the networks see 32x32 or
    224x224 crops of it. One window, reused; it does not block the main one."""

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.canvas = ImageCanvas(self, min_size=64)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)

    def show_frame(self, rgb, name: str) -> None:
        h, w = rgb.shape[:2]
        self.setWindowTitle(f"{name} \u2014 {w}\u00d7{h} as loaded")
        self.canvas.set_rgb(rgb)
        screen = self.screen().availableGeometry() if self.screen() is not None else None
        limit_w, limit_h = (int(0.8 * screen.width()), int(0.8 * screen.height())) if screen else (1200, 800)
        scale = min(1.0, limit_w / w, limit_h / h) if w and h else 1.0
        self.resize(max(160, int(w * scale)), max(120, int(h * scale)))
        self.show()
        self.raise_()

