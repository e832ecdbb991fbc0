"""Timecourses: ROI and global signal, motion and FD, feedback, and per-stage latency, all live.

Curves are created once; each repaint hands them views of the model's preallocated arrays
(``setData`` with clip-to-view and peak downsampling), so the cost per volume stays flat.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from rtcontrol.console import events as ev
from rtcontrol.console.model import MOTION, RunModel
from rtcontrol.gui.panel import Panel
from rtcontrol.gui.theme import pen

#: Latency curves: stage -> legend label (ms after the file was first seen; short: the legend is the
#: plot's title and must fit a third of a 1366 px window).
LATENCY = {
    "parsed": "ready",
    "worker_received": "worker",
    "result_ready": "result",
    "feedback_received": "returned",
    "subject_delivered": "subject",
}
ROI_METRICS = ("roi_mean", "roi", "roi_psc", "psc")
#: Shading per condition code (the project's design order: baseline first), translucent behind the curves.
CONDITION_BRUSHES = ("#ffffff0d", "#5fd3a02e", "#f0b54a2e", "#6fa0d82e", "#e07a9a2e")
#: The same colours, opaque, for the legend of condition names in the feedback plot's title.
CONDITION_LEGEND = ("#c8ccd4", "#5fd3a0", "#f0b54a", "#6fa0d8", "#e07a9a")


class ConditionBands(pg.GraphicsObject):
    """Condition blocks ``(first, last + 1, code)`` as translucent bands over the plot's whole height, behind
    the curves. One item paints every block: a pyqtgraph region per block (an item and two lines each)
    cost about 0.1 ms of painting per block and plot, so a long protocol alone would break the frame goal."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[tuple[int, int, int]] = []
        self.setZValue(-10)
        self._brushes = [pg.mkBrush(b) for b in CONDITION_BRUSHES]

    def set_blocks(self, blocks: list[tuple[int, int, int]]) -> None:
        self.prepareGeometryChange()
        self.blocks = list(blocks)
        self.update()

    def regions(self) -> list[tuple[tuple[float, float], int]]:
        """What is drawn: ``((left, right), code)`` per block, in volume units (a volume is 1 wide)."""
        return [((first - 0.5, end - 0.5), code) for first, end, code in self.blocks]

    def viewRangeChanged(self) -> None:  # pyqtgraph calls it: the bands span the new height
        self.prepareGeometryChange()

    def boundingRect(self) -> QtCore.QRectF:
        view = self.viewRect()
        if view is None or not self.blocks:
            return QtCore.QRectF()
        left, right = min(b[0] for b in self.blocks) - 0.5, max(b[1] for b in self.blocks) - 0.5
        return QtCore.QRectF(left, view.top(), right - left, view.height())

    def paint(self, painter: Any, *args: Any) -> None:
        view = self.viewRect()
        if view is None:
            return
        painter.setPen(QtCore.Qt.PenStyle.NoPen)
        for first, end, code in self.blocks:
            brush = self._brushes[code % len(self._brushes)]
            painter.fillRect(QtCore.QRectF(first - 0.5, view.top(), end - first, view.height()), brush)


class SparseAxis(pg.AxisItem):
    """A y axis whose numbers never overlap: major ticks at least :attr:`GAP` text lines apart (a short
    plot shows two or three numbers instead of a pile of them)."""

    GAP = 1.25

    def tickSpacing(self, minVal: float, maxVal: float, size: float) -> list[tuple[float, float]]:
        levels = super().tickSpacing(minVal, maxVal, size)
        if not levels or size <= 0:
            return levels
        font = self.style.get("tickFont") or QtGui.QFont()
        least = abs(maxVal - minVal) * self.GAP * QtGui.QFontMetricsF(font).height() / size
        step = levels[0][0]
        while step < least:  # the next of 1, 2, 2.5, 5 x 10^k
            power = 10.0 ** np.floor(np.log10(step) + 1e-9)
            step = power * next(m for m in (2.0, 2.5, 5.0, 10.0) if m > step / power + 1e-9)
        return [(step, 0.0)]


#: The plots in columns when the panel is short (1366x768, a maximised window): signal over feedback, motion
#: over FD, latency; in two columns (short and narrow) latency goes under feedback. In one column (a tall
#: panel) they are in the order they are made in.
COLUMNS = {
    3: (("signal", "feedback"), ("motion", "fd"), ("latency",)),
    2: (("signal", "feedback", "latency"), ("motion", "fd")),
}
#: Each column's share of the width: the run's signal and feedback widest, then latency, then motion.
SHARES = {1: (1.0,), 2: (0.55, 0.45), 3: (0.37, 0.3, 0.33)}
#: Below this plot height (px, title included) in one column, the plots go into columns.
ONE_COLUMN_MIN = 95
#: The narrowest a column of plots may be (px).
COLUMN_MIN = 300


class Ranges:
    """Axis ranges that change only when the data leaves them (or shrinks a lot).

    Auto-ranging on every volume moves the axes each frame, and repainting axis text is most of
    what a frame costs; steps of 50 volumes in x and an expand-only y range keep the axes still.
    """

    X_STEP = 50

    def __init__(self) -> None:
        self.x = 0
        self.y: dict[str, tuple[float, float]] = {}

    def x_max(self, n: int, expected: int) -> int:
        want = max(expected, self.X_STEP * (n // self.X_STEP + 1))
        changed = want != self.x
        self.x = want
        return want if changed else -1

    def y_range(self, key: str, arrays: list[np.ndarray], robust: bool = False) -> tuple[float, float] | None:
        """A new range when the data left the current one (``robust``: the top 5% may stay outside)."""
        finite = [a[np.isfinite(a)] for a in arrays if a.size]
        finite = [a for a in finite if a.size]
        if not finite:
            return None
        lo = float(min(a.min() for a in finite))
        if robust:  # 95th percentile of the recent volumes: constant cost however long the run
            hi = float(max((np.percentile(a[-200:], 95) if a.size >= 20 else a.max()) for a in finite))
        else:
            hi = float(max(a.max() for a in finite))
        old = self.y.get(key)
        if old is not None and old[0] <= lo and hi <= old[1] and (old[1] - old[0]) < 4 * self._span(lo, hi):
            return None
        span = self._span(lo, hi)
        new = (lo - 0.3 * span, hi + 0.3 * span)  # room to grow: the axis is not redrawn every volume
        self.y[key] = new
        return new

    @staticmethod
    def _span(lo: float, hi: float) -> float:
        return max(hi - lo, 1e-3, 0.02 * max(abs(lo), abs(hi)))


#: Above this many volumes a curve is drawn from per-bin minimum and maximum (peaks stay visible);
#: the panel uses half its width in pixels (a min/max pair per four pixels keeps every peak, paints faster).
MAX_POINTS = 3000


def decimate(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Peak-preserving downsampling: each bin of k volumes becomes its minimum and maximum."""
    n = y.size
    if n <= max_points:
        return x, y
    k = -(-n // (max_points // 2))
    m = n // k * k
    bins = y[:m].reshape(-1, k)
    out_y = np.empty(2 * bins.shape[0])
    out_y[0::2] = np.fmin.reduce(bins, axis=1)  # NaN only where a whole bin is NaN, without warnings
    out_y[1::2] = np.fmax.reduce(bins, axis=1)
    out_x = np.repeat(x[:m:k], 2)
    return np.concatenate([out_x, x[m:]]), np.concatenate([out_y, y[m:]])


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
        # the plots sit in column layouts: one column, or two or three when the panel is short (arrange)
        self._column_layouts = (self.graphics.addLayout(row=0, col=0), pg.GraphicsLayout(), pg.GraphicsLayout())
        for column in self._column_layouts[1:]:
            column.setParentItem(self.graphics.ci)  # hidden until the plots go into columns (arrange)
            column.setVisible(False)
        for column in self._column_layouts:
            column.setContentsMargins(0, 0, 0, 0)
            column.layout.setSpacing(0)  # the titles already keep the plots apart
        # PlotCurveItem, not PlotDataItem: a few thousand points need no downsampling, and its setData
        # costs a fifth; NaN (no value for that volume) leaves a gap
        self.curves: dict[str, pg.PlotCurveItem] = {}
        self.signal = self._plot(0, "signal %", [("global", "global mean", pen(1)), ("roi", "ROI", pen(0, 2))])
        self.motion = self._plot(
            1, "motion mm/°",
            [(name, name, pen(n, 1)) for n, name in enumerate(MOTION)],
        )
        # framewise displacement on its own, with the threshold line and the count of volumes over it
        self.fd = self._plot(2, "FD mm", [("fd", "FD", pg.mkPen("#ffffff", width=1))])
        self.fd_threshold = 0.5
        self.fd_line = pg.InfiniteLine(angle=0, pos=self.fd_threshold,
                                       pen=pg.mkPen("#e05a5a", width=1, style=QtCore.Qt.PenStyle.DashLine))
        self.fd.addItem(self.fd_line)
        self.fd_text = ""
        self.fd_over = 0
        self.feedback = self._plot(3, "feedback", [("feedback", "feedback", pen(0, 2))])
        self.latency = self._plot(
            4, "latency ms",
            [("lat:" + stage, label, pen(n + 2, 1)) for n, (stage, label) in enumerate(LATENCY.items())],
        )
        for p in (self.motion, self.fd, self.feedback, self.latency):
            p.setXLink(self.signal)
        for p in (self.signal, self.motion, self.fd, self.feedback):
            p.getAxis("bottom").setStyle(showValues=False)
        self.latency.setLabel("bottom", "volume")
        self.plots = {"signal": self.signal, "motion": self.motion, "fd": self.fd, "feedback": self.feedback,
                      "latency": self.latency}
        self.columns = 1
        for p in self.plots.values():
            p.enableAutoRange(False)
        self.ranges = Ranges()
        self.bands = tuple(ConditionBands() for _ in self._shaded_plots())  # condition blocks, per plot
        for plot, bands in zip(self._shaded_plots(), self.bands):
            plot.addItem(bands)
        self._shaded: list[tuple[int, int, int]] = []  # the blocks the shading shows now
        self.legend: tuple[str, ...] = ()  # the condition names in the feedback plot's title
        self.expected = 0
        self._empty: set[str] = set()
        self._xs = np.arange(1024, dtype=np.float64)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.graphics)

    def _plot(self, row: int, title: str, lines: list[tuple[str, str, Any]]) -> pg.PlotItem:
        """A plot with its curves; the legend is the coloured title (it never hides data)."""
        p = self._column_layouts[0].addPlot(row=row, col=0, axisItems={"left": SparseAxis("left")})
        legend = "  ".join(
            f'<span style="color:{pen_.color().name()}">━ {label}</span>' for _, label, pen_ in lines
        ) if len(lines) > 1 else ""
        p.setTitle(f'<span style="color:#aeb8c7">{title}</span>&nbsp;&nbsp;&nbsp;{legend}', size="8pt")
        p.base_title = title
        p.layout.setRowFixedHeight(0, 16)
        p.layout.setRowSpacing(0, 0)
        p.getAxis("left").setWidth(44)
        p.getAxis("left").enableAutoSIPrefix(False)
        # a short plot (1366x768) shows fewer, non-overlapping numbers rather than a pile of them
        p.getAxis("left").setStyle(maxTickLevel=0)
        # no grid: its lines span the whole plot, so every frame would repaint them (a third of the cost)
        p.setMenuEnabled(False)
        p.hideButtons()
        for key, label, pen_ in lines:
            curve = pg.PlotCurveItem(pen=pen_, name=label, connect="finite", skipFiniteCheck=False)
            p.addItem(curve)
            self.curves[key] = curve
        # axes and title only change with their range: paint them from a pixmap cache, not text each frame
        cache = QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache
        for name in ("left", "bottom"):
            p.getAxis(name).setCacheMode(cache)
        p.titleLabel.setCacheMode(cache)
        return p

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        """Short (1366x768, a maximised window): the plots in columns, taller; tall: one column."""
        super().resizeEvent(event)
        if self.height() >= len(self.plots) * ONE_COLUMN_MIN or self.width() < 2 * COLUMN_MIN:
            self.arrange(1)
        else:
            self.arrange(3 if self.width() >= 3 * COLUMN_MIN else 2)
        self._share_width()

    def _share_width(self) -> None:
        """Columns by :data:`SHARES`, not by their titles' length (a long legend would take the room)."""
        grid = self.graphics.ci.layout
        left, _, right, _ = grid.getContentsMargins()
        shares = SHARES[self.columns]
        # the panel's width: the view inside it has not been resized yet when this runs
        room = self.contentsRect().width() - left - right - grid.horizontalSpacing() * (len(shares) - 1) - 4
        for col in range(len(self._column_layouts)):
            share = shares[col] if col < len(shares) else 0.0
            # preferred, not fixed: a column whose title needs more still gets it
            grid.setColumnPreferredWidth(col, max(0.0, room * share))
            grid.setColumnStretchFactor(col, round(100 * share))

    def arrange(self, columns: int) -> None:
        """Lay the plots out in one column or in :data:`COLUMNS`, each column its own layout (so a column's
        plots share its height evenly whatever the other columns hold)."""
        if columns == self.columns:
            return
        self.columns = columns
        outer = self.graphics.ci
        for column in self._column_layouts:
            for p in self.plots.values():
                if p in column.items:
                    column.removeItem(p)
            if column in outer.items:
                outer.removeItem(column)
            # an unused column stays a hidden child of the view: never left to Python's garbage collector,
            # which could free a Qt item from another thread
            column.setParentItem(outer)
            column.setVisible(False)
        order = [list(self.plots)] if columns == 1 else [list(c) for c in COLUMNS[columns]]
        for col, names in enumerate(order):
            column = self._column_layouts[col]
            column.setVisible(True)
            outer.addItem(column, row=0, col=col)
            for n, name in enumerate(names):
                column.addItem(self.plots[name], row=n, col=0)
                self.plots[name].getAxis("bottom").setStyle(showValues=n == len(names) - 1)
        self.latency.setLabel("bottom", "volume" if columns == 1 else None)  # columns: room for the data

    def _x(self, n: int) -> np.ndarray:
        """Volume numbers 0..n-1 as a view of one growing array (no allocation per curve)."""
        if n > self._xs.size:
            self._xs = np.arange(max(n, 2 * self._xs.size), dtype=np.float64)
        return self._xs[:n]

    def set_fd_threshold(self, mm: float) -> None:
        """The FD line (mm) and what counts as a volume over it; takes effect at once."""
        self.fd_threshold = float(mm)
        self.fd_line.setValue(self.fd_threshold)
        self.ranges.y.pop("fd", None)
        self.dirty = True

    def fd_summary(self) -> tuple[float | None, int]:
        """The latest FD (mm, None before any) and how many volumes are over the threshold."""
        fd = self.model.metric("fd")
        finite = fd[np.isfinite(fd)]
        latest = float(finite[-1]) if finite.size else None
        return latest, int(np.count_nonzero(finite > self.fd_threshold))

    def set_expected(self, volumes: int) -> None:
        """The x axis spans the expected run (or grows in steps when unknown)."""
        self.expected = volumes
        self.ranges = Ranges()
        self.dirty = True

    def on_event(self, event: Any) -> None:
        if isinstance(event, (ev.VolumeArrived, ev.FeedbackArrived, ev.Delivered, ev.DesignKnown)):
            self.dirty = True
        elif isinstance(event, ev.StateChanged) and event.state == ev.RUNNING:
            self.ranges = Ranges()
            self.clear_shading()
            self.dirty = True

    def clear_shading(self) -> None:
        """No bands for a new run (until its design or its first condition metric)."""
        self._shade([])

    @property
    def shading(self) -> list[tuple[tuple[float, float], int]]:
        """The bands drawn: ``((left, right), code)`` per block (the same on every shaded plot)."""
        return self.bands[0].regions()

    def _shaded_plots(self) -> tuple[pg.PlotItem, ...]:
        return (self.signal, self.feedback)

    def _shade(self, runs: list[tuple[int, int, int]]) -> None:
        """Condition blocks ``(first, last + 1, code)`` as shaded bands: the project's whole design from the
        run's start, or its ``condition`` metric volume by volume (repainted only when they change)."""
        if runs == self._shaded:
            return
        self._shaded = list(runs)
        for bands in self.bands:
            bands.set_blocks(self._shaded)

    def _show_legend(self, names: tuple[str, ...]) -> None:
        """The condition names in the shading's colours, in the feedback plot's title (never over the data)."""
        if names == self.legend:
            return
        self.legend = names
        p = self.feedback
        legend = "  ".join(f'<span style="color:{CONDITION_LEGEND[n % len(CONDITION_LEGEND)]}">■ {name}</span>'
                           for n, name in enumerate(names))
        p.setTitle(f'<span style="color:#aeb8c7">{p.base_title}</span>&nbsp;&nbsp;&nbsp;{legend}', size="8pt")

    def repaint_now(self) -> None:
        m = self.model
        ys: dict[str, list[np.ndarray]] = {k: [] for k in self.plots}

        limit = max(400, self.graphics.width() // 2)

        def put(key: str, plot: str, y: np.ndarray) -> None:
            if y.size:
                self.curves[key].setData(*decimate(self._x(y.size), y, limit))
                self._empty.discard(key)
            elif key not in self._empty:  # an absent metric costs nothing once cleared
                self.curves[key].setData(np.empty(0), np.empty(0))
                self._empty.add(key)
            ys[plot].append(y)

        put("global", "signal", percent_change(m.global_mean.values()))
        roi = next((m.metric(n) for n in ROI_METRICS if n in m.metrics), np.empty(0))
        put("roi", "signal", percent_change(roi) if roi.size else roi)
        for c, name in enumerate(MOTION):
            put(name, "motion", m.motion.values(c) if m.motion.length else np.empty(0))
        fd = m.metric("fd")
        put("fd", "fd", fd)
        ys["fd"].append(np.array([0.0, 1.5 * self.fd_threshold]))  # the threshold line stays in view
        latest, over = self.fd_summary()
        text = (f"latest {latest:.2f} mm · {over} over {self.fd_threshold:g} mm" if latest is not None
                else f"threshold {self.fd_threshold:g} mm")
        if text != self.fd_text:
            self.fd_text, self.fd_over = text, over
            colour = "#e05a5a" if over else "#aeb8c7"
            self.fd.setTitle(f'<span style="color:#aeb8c7">FD mm</span>&nbsp;&nbsp;&nbsp;'
                             f'<span style="color:{colour}">{text}</span>', size="8pt")
        put("feedback", "feedback", m.feedback.values())
        self._shade(m.condition_blocks())
        self._show_legend(m.design.conditions if m.design is not None else ())
        for stage in LATENCY:
            put("lat:" + stage, "latency", m.latency_ms(stage) if m.stamps.length else np.empty(0))
        expected = max(self.expected, m.design.volumes if m.design is not None else 0)  # the whole protocol
        x = self.ranges.x_max(max(m.stamps.length, m.global_mean.length), expected)
        if x >= 0:
            self.signal.setXRange(-0.5, x + 0.5, padding=0)
        for key, plot in self.plots.items():
            r = self.ranges.y_range(key, ys[key], robust=key == "latency")  # a few slow volumes
            # (a reference image being made) must not flatten the rest
            if r is not None:
                plot.setYRange(*r, padding=0)
