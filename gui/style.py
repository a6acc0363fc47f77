"""The window's look: one dark theme for widgets and plots, per-network colours, palettes.

Every colour the window uses is named here, so the Qt widgets, the pyqtgraph plots and the numpy
renderings (feature maps, class maps) agree.
"""

from __future__ import annotations

import colorsys

import numpy as np

BACKGROUND = "#1b1d21"
PANEL = "#24272d"
PANEL_BORDER = "#353a42"
TEXT = "#e4e6eb"
TEXT_DIM = "#9aa1ab"
GRID = "#3a3f47"
GOOD = "#3fb37f"
WARN = "#e0a43a"
BAD = "#e05a4f"
ACCENT = "#5aa9e6"

# Okabe-Ito hues, lightened for a dark background; in registry (display) order.
MODEL_COLORS = ("#56b4e9", "#e69f00", "#2fc79a", "#d88fc0", "#f0e442", "#e86a3a")

# Feature maps: viridis for the values, the panel colour for the gaps between tiles.
FEATURE_COLORMAP = "viridis"

# Class maps: tab10's hues (CIFAR-10 has ten classes), then evenly spread hues for more.
_TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
          "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def model_color(index: int) -> str:
    return MODEL_COLORS[index % len(MODEL_COLORS)]


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    color = color.lstrip("#")
    return int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16)


def class_palette(n: int) -> np.ndarray:
    """(n, 3) uint8 colours, one per class; the first ten are tab10's."""
    colours = [hex_to_rgb(c) for c in _TAB10[:n]]
    golden = 0.618033988749895
    hue = 0.11
    while len(colours) < n:
        hue = (hue + golden) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.95)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return np.array(colours, dtype=np.uint8).reshape(n, 3)


def feature_lut() -> np.ndarray:
    """(256, 3) uint8: entries 0..254 are the colour map, entry 255 is the gap between tiles."""
    import pyqtgraph as pg

    lut = np.empty((256, 3), np.uint8)
    lut[:255] = pg.colormap.get(FEATURE_COLORMAP).getLookupTable(nPts=255, alpha=False)
    lut[255] = hex_to_rgb(PANEL)
    return lut


STYLESHEET = f"""
QMainWindow, QWidget {{ background: {BACKGROUND}; color: {TEXT}; font-size: 10pt; }}
QToolBar {{ background: {PANEL}; border: none; border-bottom: 1px solid {PANEL_BORDER}; spacing: 2px;
            padding: 3px; }}
QToolBar QToolButton {{ padding: 4px 5px; border-radius: 4px; }}
QToolBar QToolButton:hover {{ background: {PANEL_BORDER}; }}
QToolBar QToolButton:checked {{ background: #34506b; }}
QToolBar QLabel {{ color: {TEXT_DIM}; padding: 0 2px 0 8px; }}
QFrame#modelPanel {{ background: {PANEL}; border: 1px solid {PANEL_BORDER}; border-radius: 6px; }}
QFrame#modelPanel QWidget {{ background: transparent; }}
QFrame#modelPanel QComboBox {{ background: {BACKGROUND}; }}
QLabel#panelTitle {{ font-size: 12pt; font-weight: bold; }}
QLabel#dim {{ color: {TEXT_DIM}; }}
QLabel#badge {{ padding: 1px 6px; font-weight: bold; font-size: 9pt; color: #101214; }}  /* ground: Badge */
QComboBox {{ background: {PANEL}; border: 1px solid {PANEL_BORDER}; border-radius: 3px; padding: 2px 6px;
             min-height: 18px; }}
QComboBox QAbstractItemView {{ background: {PANEL}; selection-background-color: #34506b; }}
QCheckBox {{ spacing: 4px; }}
QPushButton {{ background: {PANEL}; border: 1px solid {PANEL_BORDER}; border-radius: 3px; padding: 3px 10px; }}
QPushButton:hover {{ background: {PANEL_BORDER}; }}
QTableWidget {{ background: {PANEL}; gridline-color: {PANEL_BORDER}; border: 1px solid {PANEL_BORDER}; }}
QHeaderView::section {{ background: {BACKGROUND}; color: {TEXT_DIM}; border: none;
                        border-bottom: 1px solid {PANEL_BORDER}; padding: 3px 6px; font-weight: bold; }}
QStatusBar {{ background: {PANEL}; border-top: 1px solid {PANEL_BORDER}; }}
QStatusBar QLabel {{ padding: 0 6px; }}
QSplitter::handle {{ background: {BACKGROUND}; }}
QToolTip {{ background: {PANEL}; color: {TEXT}; border: 1px solid {PANEL_BORDER}; }}
"""


def configure_pyqtgraph() -> None:
    import pyqtgraph as pg

    pg.setConfigOptions(imageAxisOrder="row-major", antialias=True, background=BACKGROUND, foreground=TEXT_DIM)


def heat_lut() -> np.ndarray:
    """256 x 3 uint8, the rainbow Grad-CAM tools use (blue, cyan, yellow, red: low to high
    evidence), so that the overlay reads the same as theirs."""
    t = np.linspace(0.0, 1.0, 256)
    r = np.clip(1.5 - np.abs(4 * t - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * t - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * t - 1), 0, 1)
    return (255 * np.stack([r, g, b], axis=1)).astype(np.uint8)
