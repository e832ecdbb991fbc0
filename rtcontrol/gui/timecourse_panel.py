"""Timecourses: ROI and global signal, motion and FD, feedback, and per-stage latency, all live.

Curves are created once; each repaint hands them views of the model's preallocated arrays
(``setData`` with clip-to-view and peak downsampling), so the cost per volume stays flat.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6 import QtWidgets

from rtcontrol.console import events as ev
from rtcontrol.console.model import MOTION, RunModel
from rtcontrol.gui.panel import Panel
from rtcontrol.gui.theme import pen

#: Latency curves: stage -> legend label (ms after the file was first seen).
LATENCY = {
    "parsed": "volume ready",
    "worker_received": "at worker",
    "result_ready": "result",
    "feedback_received": "feedback back",
    "subject_delivered": "at subject",
}
ROI_METRICS = ("roi_mean", "roi", "roi_psc", "psc")


def percent_change(y: np.ndarray, baseline: int = 10) -> np.ndarray:
    """Signal as % change from the mean of its first ``baseline`` finite values."""
    finite = y[np.isfinite(y)][:baseline]
    if finite.size == 0 or finite.mean() == 0:
        return np.full_like(y, np.nan)
    m = finite.mean()
    return (y - m) / m * 100.0


class TimecoursePanel(Panel):
    title = "Timecourses"
    icon_name = "chart"

    def __init__(self, model: RunModel, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.graphics = pg.GraphicsLayoutWidget()
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.signal = self._plot(0, "signal %", [("global", "global mean", pen(1)), ("roi", "ROI", pen(0, 2))])
        self.motion = self._plot(
            1, "motion mm/°",
            [(name, name, pen(n, 1.2)) for n, name in enumerate(MOTION)] + [("fd", "FD", pg.mkPen("#ffffff", width=1.5))],
        )
        self.feedback = self._plot(2, "feedback", [("feedback", "feedback", pen(0, 2))])
        self.curves["feedback"].setSymbol("o")
        self.curves["feedback"].setSymbolSize(4)
        self.curves["feedback"].setSymbolBrush("#5fd3a0")
        self.curves["feedback"].setSymbolPen(None)
        self.latency = self._plot(
            3, "latency ms",
            [("lat:" + stage, label, pen(n + 2, 1.2)) for n, (stage, label) in enumerate(LATENCY.items())],
        )
        for p in (self.motion, self.feedback, self.latency):
            p.setXLink(self.signal)
        for p in (self.signal, self.motion, self.feedback):
            p.getAxis("bottom").setStyle(showValues=False)
        self.latency.setLabel("bottom", "volume")
        for c in self.curves.values():
            c.setDownsampling(auto=True, method="peak")
            c.setClipToView(True)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.graphics)

    def _plot(self, row: int, title: str, lines: list[tuple[str, str, Any]]) -> pg.PlotItem:
        """A plot with its curves; the legend is the coloured title (it never hides data)."""
        p = self.graphics.addPlot(row=row, col=0)
        legend = "  ".join(
            f'<span style="color:{pen_.color().name()}">━ {label}</span>' for _, label, pen_ in lines
        ) if len(lines) > 1 else ""
        p.setTitle(f'<span style="color:#aeb8c7">{title}</span>&nbsp;&nbsp;&nbsp;{legend}', size="8pt")
        p.layout.setRowFixedHeight(0, 18)
        p.layout.setRowSpacing(0, 0)
        p.getAxis("left").setWidth(44)
        p.getAxis("left").enableAutoSIPrefix(False)
        p.showGrid(x=True, y=True, alpha=0.15)
        p.setMenuEnabled(False)
        p.hideButtons()
        for key, label, pen_ in lines:
            self.curves[key] = p.plot(pen=pen_, name=label)
        return p

    def on_event(self, event: Any) -> None:
        if isinstance(event, (ev.VolumeArrived, ev.FeedbackArrived, ev.Delivered)):
            self.dirty = True
        elif isinstance(event, ev.StateChanged) and event.state == ev.RUNNING:
            self.dirty = True

    def repaint_now(self) -> None:
        m = self.model
        x = np.arange(m.global_mean.length, dtype=np.float64)
        self.curves["global"].setData(x, percent_change(m.global_mean.values()))
        roi = next((m.metric(n) for n in ROI_METRICS if n in m.metrics), None)
        if roi is not None and roi.size:
            self.curves["roi"].setData(np.arange(roi.size, dtype=np.float64), percent_change(roi))
        else:
            self.curves["roi"].setData([], [])
        n = m.motion.length
        xm = np.arange(n, dtype=np.float64)
        for c, name in enumerate(MOTION):
            self.curves[name].setData(xm, m.motion.values(c)) if n else self.curves[name].setData([], [])
        fd = m.metric("fd")
        self.curves["fd"].setData(np.arange(fd.size, dtype=np.float64), fd)
        fb = m.feedback.values()
        self.curves["feedback"].setData(np.arange(fb.size, dtype=np.float64), fb)
        ns = m.stamps.length
        xs = np.arange(ns, dtype=np.float64)
        for stage in LATENCY:
            self.curves["lat:" + stage].setData(xs, m.latency_ms(stage))
