"""Live views: three orthogonal slices of the newest volume, the ROI and activation overlays, contrast and
a voxel cursor.

Every view is drawn in a standard orientation whatever the acquisition (:mod:`rtcontrol.gui.orientation`):
axial with anterior up, coronal and sagittal with superior up, left/right by the console's convention
(radiological by default), with the anatomical direction written on each edge. The activation overlay is
the project's newest t-map (``model.maps``), put on the volume's grid and shown where |t| reaches the
threshold slider: hot colours for positive t, cold for negative, translucent over the anatomy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from rtcontrol.console import events as ev
from rtcontrol.console.model import RunModel, StatMap
from rtcontrol.gui.orientation import VIEW_AXES, VIEWS, Orientation, cut, edge_labels, x_inverted
from rtcontrol.gui.panel import Panel, caption

#: The ROI is drawn as its outline (green: apart from the t-map's hot and cold colours, which show through).
ROI_RGBA = np.array([[0, 0, 0, 0], [90, 230, 110, 235]], dtype=np.ubyte)  # elsewhere, on the ROI's edge
#: Opacity of the activation overlay's voxels (0..255): the anatomy shows through.
MAP_ALPHA = 190
#: The map the activation overlay draws (``Result.maps`` name), and the threshold slider's steps of |t|.
T_MAP = "t"
THRESHOLD_STEP = 0.1
NO_MAP = "no t-map yet"
EDGE_COLOUR = "#f0b54a"
#: Text anchor of each edge label: it sits just inside its edge of the image.
ANCHORS = {"left": (0.0, 0.5), "right": (1.0, 0.5), "top": (0.5, 0.0), "bottom": (0.5, 1.0)}


def levels_for(data: np.ndarray, upper_percentile: float) -> tuple[float, float]:
    """Display range: from the 1st percentile to ``upper_percentile`` of a subsample (cheap: one partition)."""
    sample = data.ravel()[:: max(1, data.size // 8000)]
    n = sample.size - 1
    lo_k, hi_k = round(0.01 * n), round(upper_percentile / 100.0 * n)
    part = np.partition(sample, (lo_k, hi_k))
    lo, hi = float(part[lo_k]), float(part[hi_k])
    return lo, hi if hi > lo else lo + 1.0


def outline(mask: np.ndarray) -> np.ndarray:
    """The edge of a 2-D mask: its voxels with a 4-neighbour outside it (the slice's border counts as outside)."""
    m = np.pad(mask.astype(bool), 1)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return m[1:-1, 1:-1] & ~inner


def cut_voxels(o: Orientation, view: str, pos: tuple[int, int, int]) -> np.ndarray:
    """Voxel indices (3, w, h) of the acquired grid under a view's cut through display index ``pos``: the
    voxels :func:`rtcontrol.gui.orientation.cut` shows, in the same places."""
    ax, ay, through = VIEW_AXES[view]
    shape = o.display_shape
    d = np.empty((3, shape[ax], shape[ay]), np.intp)
    d[ax] = np.arange(shape[ax])[:, None]
    d[ay] = np.arange(shape[ay])[None, :]
    d[through] = pos[through]
    ijk = np.empty_like(d)
    for axis, (to, flip) in enumerate(o.ornt):
        c = d[int(to)]
        ijk[axis] = o.shape[axis] - 1 - c if flip < 0 else c
    return ijk


def _stat_lut() -> np.ndarray:
    """513 RGBA colours: 0..255 positive t from red to yellow, 256..511 negative t from blue to cyan, 512 none."""
    ramp = np.arange(256, dtype=np.ubyte)
    lut = np.zeros((513, 4), dtype=np.ubyte)
    lut[:256, 0], lut[:256, 1] = 255, ramp
    lut[256:512, 2], lut[256:512, 1] = 255, ramp
    lut[:512, 3] = MAP_ALPHA
    return lut


STAT_LUT = _stat_lut()


def stat_rgba(values: np.ndarray, threshold: float, vmax: float) -> np.ndarray:
    """RGBA (..., 4) of a map's slice: transparent where |t| < ``threshold`` (or t is 0); positive t from red
    at the threshold to yellow at ``vmax``, negative t from blue to cyan (:data:`STAT_LUT`)."""
    values = np.asarray(values, dtype=np.float32)  # a slice of a float16 map: small
    a = np.abs(values)
    ramp = ((a - threshold) * (255.0 / max(vmax - threshold, 1e-6))).astype(np.intp)
    np.clip(ramp, 0, 255, out=ramp)
    ramp += (values < 0) * 256
    ramp[(a < threshold) | (values == 0)] = 512
    return STAT_LUT.take(ramp, axis=0)


class SlicesPanel(Panel):
    title = "Live views"
    icon_name = "brain"

    def __init__(self, model: RunModel, parent: QtWidgets.QWidget | None = None,
                 convention: str = "radiological") -> None:
        super().__init__(parent)
        self.model = model
        self.convention = convention
        self.cut_index: tuple[int, int, int] | None = None  # the cut, as a display (R, A, S-ordered) index
        self.shape: tuple[int, int, int] | None = None  # display shape
        self.orientation: Orientation | None = None
        self._grid: tuple[Any, ...] | None = None
        self._scales: dict[str, tuple[float, float]] = {}
        self.cursor_text = ""
        self._drawn: tuple[object, ...] | None = None
        self._edges: tuple[np.ndarray, tuple[object, ...], dict[str, np.ndarray]] | None = None  # ROI outline per view
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setMinimumHeight(150)
        self.views: dict[str, pg.ViewBox] = {}
        self.images: dict[str, pg.ImageItem] = {}
        self.overlays: dict[str, pg.ImageItem] = {}
        self.lines: dict[str, tuple[pg.InfiniteLine, pg.InfiniteLine]] = {}
        self.captions: dict[str, pg.LabelItem] = {}
        self.edges: dict[str, dict[str, pg.TextItem]] = {}
        for col, name in enumerate(VIEWS):
            # the caption is its own row above the view: drawing images never hides it
            self.captions[name] = self.graphics.addLabel(name, row=0, col=col, color="#8a94a3", size="9pt")
            vb = self.graphics.addViewBox(row=1, col=col, lockAspect=True, enableMouse=False)
            vb.setMenuEnabled(False)
            img = pg.ImageItem()
            overlay = pg.ImageItem()  # the t-map and the ROI's outline in one image: the map adds no draw
            vb.addItem(img)
            vb.addItem(overlay)
            h = pg.InfiniteLine(angle=0, pen=pg.mkPen("#6fa0d8", width=1, style=QtCore.Qt.PenStyle.DashLine))
            v = pg.InfiniteLine(angle=90, pen=pg.mkPen("#6fa0d8", width=1, style=QtCore.Qt.PenStyle.DashLine))
            vb.addItem(h)
            vb.addItem(v)
            self.edges[name] = {}
            for edge, anchor in ANCHORS.items():
                label = pg.TextItem("", color=EDGE_COLOUR, anchor=anchor)
                label.setFont(QtGui.QFont("", 11, QtGui.QFont.Weight.Bold))
                vb.addItem(label)
                self.edges[name][edge] = label
            self.views[name], self.images[name], self.overlays[name] = vb, img, overlay
            self.lines[name] = (h, v)
            img.hoverEvent = self._hover_handler(name)
            img.mouseClickEvent = self._click_handler(name)
        self.graphics.ci.layout.setRowStretchFactor(1, 1)
        self.set_convention(convention)

        self.contrast = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.contrast.setRange(900, 1000)  # upper percentile x10
        self.contrast.setValue(995)
        self.contrast.setToolTip("Contrast: the brightest shown value, as a percentile of the volume")
        self.contrast.valueChanged.connect(self._mark)
        self.show_roi = QtWidgets.QCheckBox("ROI")
        self.show_roi.setChecked(True)
        self.show_roi.toggled.connect(self._mark)
        # the activation overlay: on/off, and the |t| it starts at
        self.show_map = QtWidgets.QCheckBox("t-map")
        self.show_map.setChecked(True)
        self.show_map.setToolTip("Show the project's t-map (its contrast, updated every volume) over the slices")
        self.show_map.toggled.connect(self._mark_map)
        self.threshold = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.threshold.setRange(0, 200)  # |t| x 10: 0 to 20
        self.threshold.setValue(30)
        self.threshold.setToolTip("Threshold: voxels with |t| at or above it are coloured")
        self.threshold.valueChanged.connect(self._mark_map)
        self.threshold_label = QtWidgets.QLabel()
        self.threshold_label.setMinimumWidth(self.threshold_label.fontMetrics().horizontalAdvance("|t| ≥ 20.0 "))
        self.map_label = caption(NO_MAP)
        self._show_threshold()
        self.cursor_label = QtWidgets.QLabel("move the mouse over a slice; click to move the cut")
        self.cursor_label.setObjectName("caption")
        self.volume_label = QtWidgets.QLabel("no volume yet")
        self.convention_label = caption("")

        # two short rows under the views (the views get the height; one row clipped the readout on small
        # screens): the controls, then the cursor readout with the volume and the left/right convention
        self.cursor_label.setMinimumWidth(120)
        self.contrast.setMaximumWidth(180)
        self.threshold.setMaximumWidth(140)
        controls = QtWidgets.QHBoxLayout()
        controls.addWidget(caption("contrast"))
        controls.addWidget(self.contrast)
        controls.addWidget(self.show_roi)
        controls.addSpacing(8)
        controls.addWidget(self.show_map)
        controls.addWidget(self.threshold)
        controls.addWidget(self.threshold_label)
        controls.addWidget(self.map_label)
        controls.addStretch(1)
        readout = QtWidgets.QHBoxLayout()
        readout.addWidget(self.cursor_label, 1)
        readout.addWidget(self.volume_label)
        readout.addWidget(self.convention_label)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(2)
        layout.addWidget(self.graphics, 1)
        layout.addLayout(controls)
        layout.addLayout(readout)
        self._update_convention_label()

    # --- orientation ----------------------------------------------------------------------
    def set_convention(self, convention: str) -> None:
        """Radiological (the patient's right on the screen's left) or neurological; takes effect at once."""
        for name in VIEWS:
            inverted = x_inverted(name, convention)  # raises on an unknown convention, before any change
            self.views[name].invertX(inverted)
        self.convention = convention
        for name in VIEWS:
            for edge, text in edge_labels(name, convention).items():
                self.edges[name][edge].setText(text)
        self._place_edges()
        if hasattr(self, "convention_label"):
            self._update_convention_label()

    def _update_convention_label(self) -> None:
        self.convention_label.setText(
            "radiological: R on the left" if self.convention == "radiological" else "neurological: L on the left")

    def edge_text(self, view: str) -> dict[str, str]:
        """What each edge of a view says (tests, screenshots)."""
        return {edge: item.toPlainText() for edge, item in self.edges[view].items()}

    def _place_edges(self) -> None:
        if self.shape is None or not self._scales:
            for labels in self.edges.values():
                for item in labels.values():
                    item.setVisible(False)
            return
        for name in VIEWS:
            ax, ay, _ = VIEW_AXES[name]
            sx, sy = self._scales[name]
            w, h = self.shape[ax] * sx, self.shape[ay] * sy
            inverted = x_inverted(name, self.convention)
            left, right = (w, 0.0) if inverted else (0.0, w)
            spots = {"left": (left, h / 2), "right": (right, h / 2), "top": (w / 2, h), "bottom": (w / 2, 0.0)}
            for edge, (x, y) in spots.items():
                item = self.edges[name][edge]
                item.setPos(x, y)
                item.setVisible(True)

    # --- events -------------------------------------------------------------------------
    def centre_on_roi(self) -> None:
        """Cut through the ROI's centre, so all three views show it."""
        mask = self.model.roi_mask
        if mask is not None and mask.any():
            centre = np.argwhere(mask).mean(axis=0).round().astype(int)
            ijk = (int(centre[0]), int(centre[1]), int(centre[2]))
            o = self.orientation
            if o is None or o.shape != mask.shape:
                volume = self.model.latest
                o = Orientation.of(volume.affine, mask.shape) if volume is not None else None
            self.cut_index = o.to_display(ijk) if o is not None else None
        self._drawn = None
        self.dirty = True

    def _mark(self, *_: Any) -> None:
        self._drawn = None
        self.dirty = True

    def _mark_map(self, *_: Any) -> None:
        self._show_threshold()
        self.dirty = True  # the threshold and the toggle are part of the overlays' key

    @property
    def threshold_value(self) -> float:
        """The overlay's threshold: voxels with |t| at or above it are coloured."""
        return self.threshold.value() * THRESHOLD_STEP

    def set_threshold(self, value: float) -> None:
        self.threshold.setValue(round(value / THRESHOLD_STEP))

    def _show_threshold(self) -> None:
        self.threshold_label.setText(f"|t| ≥ {self.threshold_value:.1f}")
        self.threshold.setEnabled(self.show_map.isChecked())

    def shown_map(self) -> StatMap | None:
        """The map the overlay draws: the project's t-map, else its first map."""
        maps = self.model.maps
        return maps.get(T_MAP) or next(iter(maps.values()), None)

    def on_event(self, event: Any) -> None:
        if isinstance(event, (ev.VolumeArrived, ev.MapArrived)):
            self.dirty = True
        elif isinstance(event, ev.RoiPlaced):
            self.centre_on_roi()
        elif isinstance(event, ev.StateChanged) and event.state == ev.RUNNING:
            self.clear()

    def clear(self) -> None:
        """A new run: nothing of the previous run's last volume stays on screen."""
        self.cut_index = None
        self.shape = None
        self._grid = None
        self._drawn = None
        self._edges = None
        for name in VIEWS:
            self.images[name].clear()
            self.overlays[name].clear()
            self.overlays[name].setVisible(False)
        self.map_label.setText(NO_MAP)
        self.map_label.setToolTip("")
        self._place_edges()
        self.volume_label.setText("waiting for the first volume")
        self.cursor_text = ""
        self.cursor_label.setText("move the mouse over a slice; click to move the cut")

    def repaint_now(self) -> None:
        data = self.model.latest_scaled
        volume = self.model.latest
        if data is None or volume is None:
            return
        grid = (tuple(data.shape), volume.affine.tobytes())
        fit = grid != self._grid
        if fit:
            self._grid = grid
            self.orientation = Orientation.of(volume.affine, data.shape)
            self.shape = self.orientation.display_shape
            self._set_aspect(self.orientation.zooms(volume.voxel_size))
        o = self.orientation
        assert o is not None and self.shape is not None
        shape = self.shape
        if self.cut_index is None or not all(0 <= p < n for p, n in zip(self.cut_index, shape)):
            self.cut_index = (shape[0] // 2, shape[1] // 2, shape[2] // 2)
        display = o.display(data)
        levels = levels_for(data, self.contrast.value() / 10.0)
        mask = self.model.roi_mask if self.show_roi.isChecked() else None
        if mask is not None and mask.shape != data.shape:
            mask = None
        for name in VIEWS:
            self.images[name].setImage(cut(display, name, self.cut_index), levels=levels, autoLevels=False)
        # the overlays and the cut lines change with the cut, the ROI, the t-map or the threshold, not with every volume
        stat = self.shown_map() if self.show_map.isChecked() else None
        key = (self.cut_index, id(mask), grid, stat, self.threshold_value)  # a map by identity: each is new
        if key != self._drawn:
            self._drawn = key
            self._draw_overlays(mask, stat, volume.affine, grid)
            self._place_lines()
        if fit:
            self._place_edges()
            for vb in self.views.values():
                vb.autoRange(padding=0.02)
        i, j, k = data.shape
        self.volume_label.setText(f"volume {volume.index}  {i}×{j}×{k}")

    def _draw_overlays(self, mask: np.ndarray | None, stat: StatMap | None, affine: np.ndarray,
                       grid: tuple[object, ...]) -> None:
        """The t-map (where |t| reaches the threshold) with the ROI's outline on top, one RGBA image per view."""
        o, at = self.orientation, self.cut_index
        assert o is not None and at is not None
        edges = self._roi_edges(mask, grid)
        slices: dict[str, np.ndarray] = {}
        threshold, vmax = self.threshold_value, 0.0
        if stat is not None:
            if stat.same_grid(o.shape, affine):
                shown = o.display(stat.data)
                slices = {name: cut(shown, name, at) for name in VIEWS}
            else:  # sampled on the volume's grid: only the voxels drawn
                slices = {name: stat.sample(cut_voxels(o, name, at), affine) for name in VIEWS}
            vmax = max(stat.peak, threshold + 1.0)
            self.map_label.setText(f"peak {stat.peak:.1f}")
            self.map_label.setToolTip(f"the {stat.name}-map of volume {stat.index}: its largest |{stat.name}| is "
                                      f"{stat.peak:.2f}")
        elif not self.model.maps:
            self.map_label.setText(NO_MAP)
        for name in VIEWS:
            rgba = stat_rgba(slices[name], threshold, vmax) if slices else None
            if edges is not None:
                edge = edges[name]
                if rgba is None:
                    rgba = ROI_RGBA[edge.astype(np.intp)]  # (w, h, 4): no colour table
                else:
                    rgba[edge] = ROI_RGBA[1]
            if rgba is not None:
                self.overlays[name].setImage(rgba, autoLevels=False, levels=None)
            self.overlays[name].setVisible(rgba is not None)

    def _roi_edges(self, mask: np.ndarray | None, grid: tuple[object, ...]) -> dict[str, np.ndarray] | None:
        """The ROI's outline in each view's cut (kept while the cut and the ROI stay: maps change more often)."""
        if mask is None:
            return None
        key = (self.cut_index, grid)
        if self._edges is None or self._edges[0] is not mask or self._edges[1] != key:
            assert self.orientation is not None and self.cut_index is not None
            shown = self.orientation.display(mask)
            self._edges = (mask, key, {name: outline(cut(shown, name, self.cut_index)) for name in VIEWS})
        return self._edges[2]

    def _set_aspect(self, zooms: tuple[float, float, float]) -> None:
        for name in VIEWS:
            ax, ay, _ = VIEW_AXES[name]
            self._scales[name] = (zooms[ax], zooms[ay])
            t = QtGui.QTransform()
            t.scale(zooms[ax], zooms[ay])
            self.images[name].setTransform(t)
            self.overlays[name].setTransform(t)

    def _place_lines(self) -> None:
        assert self.cut_index is not None
        for name in VIEWS:
            ax, ay, _ = VIEW_AXES[name]
            a, b = self._scales[name]
            h, v = self.lines[name]
            v.setValue((self.cut_index[ax] + 0.5) * a)
            h.setValue((self.cut_index[ay] + 0.5) * b)

    def _display_at(self, name: str, x: float, y: float) -> tuple[int, int, int] | None:
        """The display index under image coordinates (x, y) of a view, or None outside the volume."""
        if self.cut_index is None or self.shape is None:
            return None
        ax, ay, _ = VIEW_AXES[name]
        d = list(self.cut_index)
        d[ax], d[ay] = int(np.floor(x)), int(np.floor(y))
        if all(0 <= c < n for c, n in zip(d, self.shape)):
            return (d[0], d[1], d[2])
        return None

    def _hover_handler(self, name: str) -> Callable[[Any], None]:
        def hover(event: Any) -> None:
            if event.isExit():
                return
            p = event.pos()
            self.read_voxel(name, p.x(), p.y())

        return hover

    def _click_handler(self, name: str) -> Callable[[Any], None]:
        def click(event: Any) -> None:
            p = event.pos()
            d = self._display_at(name, p.x(), p.y())
            if d is not None:
                self.cut_index = d
                self.dirty = True
                event.accept()

        return click

    def read_voxel(self, name: str, x: float, y: float) -> str:
        """Show voxel coordinates (of the acquired grid), world mm and value at image coordinates (x, y) of a view."""
        d = self._display_at(name, x, y)
        data, volume, o = self.model.latest_scaled, self.model.latest, self.orientation
        if d is None or data is None or volume is None or o is None or o.shape != data.shape:
            return ""
        ijk = o.to_voxel(d)
        world = volume.world_coords(np.array(ijk))[0]
        roi = ""
        mask = self.model.roi_mask
        if mask is not None and mask.shape == data.shape and mask[ijk]:
            roi = "  in ROI"
        stat = self.shown_map() if self.show_map.isChecked() else None
        if stat is not None:
            t = stat.data[ijk] if stat.same_grid(data.shape, volume.affine) else stat.sample(
                np.reshape(ijk, (3, 1)), volume.affine)[0]
            roi += f"  {stat.name} {float(t):.2f}"
        self.cursor_text = (
            f"voxel ({ijk[0]}, {ijk[1]}, {ijk[2]})  world ({world[0]:.1f}, {world[1]:.1f}, {world[2]:.1f}) mm"
            f"  value {data[ijk]:.1f}{roi}"
        )
        self.cursor_label.setText(self.cursor_text)
        return self.cursor_text
