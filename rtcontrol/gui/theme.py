"""The dark theme and icons from ``resources/`` (applied once per application)."""

from __future__ import annotations

from functools import cache

import pyqtgraph as pg
from PySide6 import QtGui, QtWidgets

from rtcontrol.paths import resources_dir

#: Plot colours (one per line), readable on the dark background.
COLORS = ("#5fd3a0", "#6fa0d8", "#f0b54a", "#e07a9a", "#b08be0", "#7fd6e0", "#e0e07a", "#ff8a5c")
BACKGROUND = "#12151a"
FOREGROUND = "#aeb8c7"


def apply(app: QtWidgets.QApplication) -> None:
    """Style sheet, plot defaults and window icon."""
    qss = resources_dir() / "theme.qss"
    if qss.is_file():
        app.setStyleSheet(qss.read_text(encoding="utf-8"))
    app.setWindowIcon(icon("app"))
    pg.setConfigOptions(background=BACKGROUND, foreground=FOREGROUND, antialias=False, imageAxisOrder="col-major")


@cache
def icon(name: str) -> QtGui.QIcon:
    """An icon from ``resources/icons/<name>.svg`` (an empty icon if it is missing)."""
    path = resources_dir() / "icons" / f"{name}.svg"
    return QtGui.QIcon(str(path)) if path.is_file() else QtGui.QIcon()


def pen(i: int, width: float = 1.0) -> QtGui.QPen:
    return pg.mkPen(COLORS[i % len(COLORS)], width=width)
