"""``summary.png``: a run's timecourses as a picture an operator can attach to a lab notebook.

Drawn with pyqtgraph (already the console's plotting library, so nothing is added to the bundle) through its
image exporter. It needs a QApplication but no display: without a window (``run --no-gui``) one is made
on Qt's "offscreen" platform. Rows: signal (global mean and ROI, % change), feedback, FD with the threshold
line and the volumes over it, motion (translations and rotations); missing volumes are marked red on each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
import pyqtgraph.exporters  # registers pg.exporters
from PySide6 import QtCore, QtGui, QtWidgets

from rtcontrol.recording.summary import RunSummary, spans

WIDTH, HEIGHT = 1200, 900
BACKGROUND = "#ffffff"  # a printed report: dark on white
MOTION_PENS = ("#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def ensure_app() -> QtWidgets.QApplication:
    """The running QApplication, or one on the offscreen platform (no display needed)."""
    app = QtWidgets.QApplication.instance()
    if app is None:
        app = QtWidgets.QApplication(["rtcontrol", "-platform", "offscreen"])
    assert isinstance(app, QtWidgets.QApplication)
    return app


def write_png(summary: RunSummary, path: Path | str, size: tuple[int, int] = (WIDTH, HEIGHT)) -> Path:
    """Draw ``summary``'s curves into ``path`` (PNG, ``size`` pixels); raises OSError if it cannot be written."""
    ensure_app()
    path = Path(path)
    width, height = size
    view = pg.GraphicsLayoutWidget()
    view.setBackground(BACKGROUND)
    view.resize(width, height)
    layout = view.ci
    layout.addLabel(_title(summary), row=0, col=0, color="#000000", size="11pt")
    c = summary.curves
    n = len(c.get("fd", []))
    x = np.arange(n, dtype=float)
    rows = [
        ("signal % change", [("global mean", _percent(c.get("signal")), "#555555"),
                             ("ROI", _percent(c.get("roi")), "#1f77b4")]),
        ("feedback", [("feedback", c.get("feedback"), "#ff7f0e")]),
        ("FD mm", [("FD", c.get("fd"), "#000000")]),
        ("motion mm / °", [(name, c["motion"][:, k] if "motion" in c and c["motion"].size else None, pen)
                           for k, (name, pen) in enumerate(zip(("tx", "ty", "tz", "rx", "ry", "rz"), MOTION_PENS))]),
    ]
    plots = []
    for r, (title, curves) in enumerate(rows, start=1):
        plot = layout.addPlot(row=r, col=0)
        plot.setLabel("left", title, color="#000000")
        plot.showGrid(x=True, y=True, alpha=0.2)
        for axis in ("left", "bottom"):
            plot.getAxis(axis).setPen("#000000")
            plot.getAxis(axis).setTextPen("#000000")
            plot.getAxis(axis).enableAutoSIPrefix(False)
        if len(curves) > 1:
            legend = plot.addLegend(offset=(5, 5), labelTextColor="#000000", colCount=6)
            legend.setBrush(pg.mkBrush("#ffffffc0"))
        for name, y, colour in curves:
            if y is not None and len(y) == n and np.isfinite(y).any():
                # dots on a short run: a lone value between missing ones still shows
                dots = {"symbol": "o", "symbolSize": 4, "symbolBrush": colour, "symbolPen": None} if n <= 60 else {}
                line = pg.mkPen(colour, width=2 if n <= 300 else 1)
                plot.plot(x, y, pen=line, name=name, connect="finite", **dots)
        for i in summary.missing:
            plot.addItem(pg.InfiniteLine(pos=i, angle=90, pen=pg.mkPen("#d62728", width=2,
                                                                        style=QtCore.Qt.PenStyle.DashLine)))
        plots.append(plot)
    fd_plot = plots[2]
    fd_plot.addItem(pg.InfiniteLine(pos=summary.fd_threshold, angle=0,
                                    pen=pg.mkPen("#d62728", width=1, style=QtCore.Qt.PenStyle.DotLine)))
    if summary.fd_over:
        fd = c["fd"]
        fd_plot.plot(np.array(summary.fd_over, dtype=float), fd[summary.fd_over], pen=None, symbol="o",
                     symbolBrush="#d62728", symbolPen=None, symbolSize=7)
    fd_plot.setYRange(0, max(1.5 * summary.fd_threshold, summary.fd_max or 0.0) * 1.05, padding=0)
    for plot in plots:
        plot.setXRange(-0.5, max(n - 0.5, 1.0), padding=0)
        if n <= 30:
            plot.getAxis("bottom").setTickSpacing(5, 1)  # whole volumes on a short run
        if plot is not plots[0]:
            plot.setXLink(plots[0])
    plots[-1].setLabel("bottom", "volume", color="#000000")
    layout.setBorder(None)
    view.setSceneRect(QtCore.QRectF(0, 0, width, height))
    layout.setGeometry(QtCore.QRectF(0, 0, width, height))  # laid out at this size without being shown
    QtWidgets.QApplication.processEvents()
    exporter = pg.exporters.ImageExporter(view.scene())
    exporter.parameters()["width"] = width
    exporter.parameters()["height"] = height
    image: QtGui.QImage = exporter.export(toBytes=True)
    view.deleteLater()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")  # the format from the suffix
    if not image.save(str(tmp)):
        raise OSError(f"could not write {path}")
    tmp.replace(path)  # whole or not at all, as summary.json
    return path


def _title(s: RunSummary) -> str:
    missing = f"missing {spans(s.missing)}" if s.missing else "none missing"
    delivered = ("no subject agent" if s.outcomes is None
                 else f"{s.delivered} of {s.feedback_values} feedback values delivered")
    fd = f"max FD {s.fd_max:.2f} mm, {len(s.fd_over)} over {s.fd_threshold:g} mm" if s.fd_max is not None else "no FD"
    return (f"<b>{s.run}</b> · {s.received} volumes ({missing}) · {delivered} · {fd}<br>"
            f"ended: {s.reason} · TR {s.tr:g} s · {s.written}")


def _percent(y: np.ndarray | None, baseline: int = 10) -> np.ndarray | None:
    """% change from the mean of the first ``baseline`` finite values (as the live plot)."""
    if y is None or not np.isfinite(y).any():
        return None
    base = y[np.isfinite(y)][:baseline].mean()
    return (y / base - 1.0) * 100.0 if base else y
