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
        self.signal = self._plot(0, "signal", "% change")
        self.motion = self._plot(1, "motion", "mm / deg")
        self.feedback = self._plot(2, "feedback", "value")
        self.latency = self._plot(3, "latency", "ms")
        self.latency.setLogMode(y=False)
        self.motion.setXLink(self.signal)
        self.feedback.setXLink(self.signal)
        self.latency.setXLink(self.signal)
        self.latency.setLabel("bottom", "volume")

        self.curves: dict[str, pg.PlotDataItem] = {}
        self.curves["global"] = self.signal.plot(pen=pen(1), name="global mean")
        self.curves["roi"] = self.signal.plot(pen=pen(0, 2), name="ROI")
        for n, name in enumerate(MOTION):
            self.curves[name] = self.motion.plot(pen=pen(n, 1.2), name=name)
        self.curves["fd"] = self.motion.plot(pen=pg.mkPen("#ffffff", width=1.5), name="FD")
        self.curves["feedback"] = self.feedback.plot(
            pen=pen(0, 2), name="feedback", symbol="o", symbolSize=4, symbolBrush="#5fd3a0", symbolPen=None
        )
        for n, (stage, label) in enumerate(LATENCY.items()):
            self.curves["lat:" + stage] = self.latency.plot(pen=pen(n + 2, 1.2), name=label)
        for c in self.curves.values():
            c.setDownsampling(auto=True, method="peak")
            c.setClipToView(True)
            c.setSkipFiniteCheck(False)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.graphics)

    def _plot(self, row: int, title: str, units: str) -> pg.PlotItem:
        p = self.graphics.addPlot(row=row, col=0)
        p.setLabel("left", title, units=None)
        p.getAxis("left").setWidth(48)
        p.showGrid(x=True, y=True, alpha=0.15)
        p.addLegend(offset=(-5, 5), labelTextSize="8pt", colCount=6, brush=pg.mkBrush(18, 21, 26, 180))
        p.setMenuEnabled(False)
        p.setToolTip(f"{title} ({units})")
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
