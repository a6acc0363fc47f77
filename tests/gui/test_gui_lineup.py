"""The Analysis tab draws a line-up's six figures, the four in their colours and the rest grey,
with each verdict's statistic, interval and number of networks."""

from __future__ import annotations

import dataclasses

import pyqtgraph as pg

from tests.engine.test_lineup import _entry, _lineup, proportional


def _brushes(widget: pg.PlotWidget) -> list[str]:
    return [pg.mkBrush(item.opts["symbolBrush"]).color().name() for item in widget.getPlotItem().listDataItems()
            if item.opts.get("symbol") is not None]


def test_the_analysis_tab_shows_a_lineup_then_the_four_again(qtbot):
    from engine.studies.analysis import Analysis, judge
    from gui import style
    from gui.analysis_view import AnalysisView
    from gui.lineup_plots import GREY
    from tests.engine.test_analysis import net

    view = AnalysisView()
    qtbot.addWidget(view)
    view.lineup_box.setCurrentIndex(view.lineup_box.findData("paper"))
    assert view.lineup == "paper" and not view.max_batch.isEnabled()  # a line-up has its own batch sizes
    entries = [dataclasses.replace(_entry("enet", group="four"), network=dataclasses.replace(
        proportional(1)[0], name="enet", label="ENet"))] + [
        dataclasses.replace(_entry(f"n{i}"), network=n) for i, n in enumerate(proportional(8)[1:])]
    r = _lineup(entries)
    view.show_analysis(r)
    assert view.plots["d2"].isHidden() and view.plots["g"].isHidden() and not view.plots["f"].isHidden()
    assert view.captions["f"].text().startswith("(f) Top-1 against batch-1 ms")
    assert view.plots["d"].getPlotItem().getAxis("bottom").labelText == "G MACs per image"
    text = view.verdicts.text()
    assert "R\u00b2 of batch-1 latency against MACs = 1.00" in text and "8 networks" in text
    colours = _brushes(view.plots["d"])
    assert colours.count(style.model_color(0)) == 1 and colours.count(GREY) == 7  # ENet in colour, 7 grey
    assert view._matches(r)
    # the four again: every figure back, in its own units
    networks = (net("lenet5", "LeNet-5", 1e6, 0.3, 0.66, 6e4), net("enet", "ENet", 8e6, 12.0, 0.8, 3.6e5),
                net("vgg16", "VGG-16", 3e8, 9.0, 0.84, 1.5e7))
    view.lineup_box.setCurrentIndex(0)
    view.show_analysis(Analysis("cifar10", "cpu", 2, "fp32", "2", "cpu", "now", 1.0, 64, networks, *judge(networks)))
    assert not view.plots["d2"].isHidden() and view.captions["f"].text().startswith("(f) Top-1 against images/s")
    assert view.max_batch.isEnabled()
