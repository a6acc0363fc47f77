"""A network's own runtime, chosen from its panel's menu: the toolbar's choice, or one backend of
the engine's registry for this network alone (the engine rebuilds that network only). What runs
it is said by the panel's cost line, from the engine's record, not by this menu."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QMenu

from engine.api import backends

TOOLBAR = ""  # the toolbar's backend, as every other network


def add_runtime_menu(menu: QMenu, chosen: Callable[[str], None]) -> QMenu:
    """A "Run on" submenu of ``menu``; ``chosen`` gets a backend's name, or TOOLBAR."""
    sub = menu.addMenu("Run on")
    for name, text in [(TOOLBAR, "what the toolbar says"), *((b.name, b.label) for b in backends())]:
        action = sub.addAction(text, lambda name=name: chosen(name))
        action.setData(name)
    return sub
