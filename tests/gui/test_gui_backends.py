"""The window reads its backends from the engine's registry: a plug-in added there appears in the
runtime picker and in the analysis's choices, with no other file changed."""

from __future__ import annotations

from PySide6.QtCore import QSettings

from tests.engine.test_tuner import fake_backend  # noqa: F401  (a fixture: the registry entry)


def test_a_registered_backend_is_in_the_picker_and_the_analysis_set_up(qtbot, tmp_path, fake_backend):  # noqa: F811
    from gui.analysis_view import AnalysisView, backend_sets
    from gui.source_bar import SourceBar

    bar = SourceBar(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(bar)
    box = bar.backend_box
    index = box.findData("fake")
    assert index >= 0 and box.itemText(index) == fake_backend.short
    assert box.itemText(box.findData("auto")) == "fastest" and box.findData("openvino") >= 0
    chosen = []
    bar.backend_chosen.connect(chosen.append)
    box.setCurrentIndex(index)
    assert chosen == ["fake"]
    assert "fake (fake torch)" in box.toolTip()
    view = AnalysisView()
    qtbot.addWidget(view)
    sets = dict(backend_sets())
    assert sets["+ fake"] == ("fake",) and "fake" in sets["+ all"]
    view.backends.setCurrentIndex(view.backends.findText("+ fake"))
    assert view.other_backends == ("fake",)


def test_a_panels_menu_runs_its_network_on_a_backend_of_its_own(qtbot, fake_backend):  # noqa: F811
    from gui.model_panel import ModelPanel

    panel = ModelPanel(0)
    qtbot.addWidget(panel)
    panel.name = "lenet5"
    entries = {a.data(): a for a in panel.runtime_menu.actions()}
    assert set(entries) >= {"", "torch", "onnxruntime", "openvino", "fake"}
    assert entries["fake"].text() == "fake torch" and entries[""].text() == "what the toolbar says"
    asked = []
    panel.runtime_requested.connect(lambda *a: asked.append(a))
    entries["openvino"].trigger()
    entries[""].trigger()
    assert asked == [("lenet5", "openvino"), ("lenet5", "")]
