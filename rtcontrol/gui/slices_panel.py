"""Live views: three orthogonal slices of the newest volume, the ROI overlay, contrast and a voxel cursor."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from rtcontrol.console import events as ev
from rtcontrol.console.model import RunModel
from rtcontrol.gui.panel import Panel, caption

ROI_RGBA = np.array([[0, 0, 0, 0], [255, 80, 60, 120]], dtype=np.ubyte)  # outside, inside the ROI
VIEWS = ("axial", "coronal", "sagittal")


def slice_of(data: np.ndarray, view: str, pos: tuple[int, int, int]) -> np.ndarray:
    """The 2-D cut of ``data`` through voxel ``pos``: axial (i, j), coronal (i, k), sagittal (j, k)."""
    i, j, k = pos
    if view == "axial":
        return data[:, :, k]
    if view == "coronal":
        return data[:, j, :]
    return data[i, :, :]


def levels_for(data: np.ndarray, upper_percentile: float) -> tuple[float, float]:
    """Display range: from the 1st percentile to ``upper_percentile`` of a subsample (cheap)."""
    sample = data.ravel()[:: max(1, data.size // 8000)]
    lo, hi = np.percentile(sample, [1.0, upper_percentile])
    return float(lo), float(hi if hi > lo else lo + 1.0)


class SlicesPanel(Panel):
    title = "Live views"
    icon_name = "brain"

    def __init__(self, model: RunModel, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.pos: tuple[int, int, int] | None = None
        self.shape: tuple[int, int, int] | None = None
        self.cursor_text = ""
        self._drawn: tuple[object, int] | None = None
        self.graphics = pg.GraphicsLayoutWidget()
        self.views: dict[str, pg.ViewBox] = {}
        self.images: dict[str, pg.ImageItem] = {}
        self.overlays: dict[str, pg.ImageItem] = {}
        self.lines: dict[str, tuple[pg.InfiniteLine, pg.InfiniteLine]] = {}
        self.labels: dict[str, pg.TextItem] = {}
        for col, name in enumerate(VIEWS):
            vb = self.graphics.addViewBox(row=0, col=col, lockAspect=True, enableMouse=False)
            vb.setMenuEnabled(False)
            vb.invertX(name == "sagittal" and False)
            img = pg.ImageItem()
            overlay = pg.ImageItem()
            vb.addItem(img)
            vb.addItem(overlay)
            h = pg.InfiniteLine(angle=0, pen=pg.mkPen("#6fa0d8", width=1, style=QtCore.Qt.PenStyle.DashLine))
            v = pg.InfiniteLine(angle=90, pen=pg.mkPen("#6fa0d8", width=1, style=QtCore.Qt.PenStyle.DashLine))
            vb.addItem(h)
            vb.addItem(v)
            label = pg.TextItem(name, color="#8a94a3", anchor=(0, 1))  # above the image's top-left corner
            vb.addItem(label)
            self.labels[name] = label
            self.views[name], self.images[name], self.overlays[name] = vb, img, overlay
            self.lines[name] = (h, v)
            img.hoverEvent = self._hover_handler(name)  # type: ignore[method-assign]
            img.mouseClickEvent = self._click_handler(name)  # type: ignore[method-assign]

        self.contrast = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.contrast.setRange(900, 1000)  # upper percentile x10
        self.contrast.setValue(995)
        self.contrast.setToolTip("Contrast: the brightest shown value, as a percentile of the volume")
        self.contrast.valueChanged.connect(self._mark)
        self.show_roi = QtWidgets.QCheckBox("ROI")
        self.show_roi.setChecked(True)
        self.show_roi.toggled.connect(self._mark)
        self.cursor = QtWidgets.QLabel("move the mouse over a slice; click to move the cut")
        self.cursor.setObjectName("caption")
        self.volume_label = QtWidgets.QLabel("no volume yet")

        controls = QtWidgets.QHBoxLayout()
        controls.addWidget(caption("contrast"))
        controls.addWidget(self.contrast, 1)
        controls.addWidget(self.show_roi)
        controls.addWidget(self.volume_label)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.graphics, 1)
        layout.addLayout(controls)
        layout.addWidget(self.cursor)

    def centre_on_roi(self) -> None:
        """Cut through the ROI's centre, so all three views show it."""
        mask = self.model.roi_mask
        if mask is not None and mask.any():
            centre = np.argwhere(mask).mean(axis=0).round().astype(int)
            self.pos = (int(centre[0]), int(centre[1]), int(centre[2]))
        self._drawn = None
        self.dirty = True

    def _mark(self, *_: Any) -> None:
        self._drawn = None
        self.dirty = True

    def on_event(self, event: Any) -> None:
        if isinstance(event, ev.VolumeArrived):
            self.dirty = True
        elif isinstance(event, ev.RoiPlaced):
            self.centre_on_roi()
        elif isinstance(event, ev.StateChanged) and event.state == ev.RUNNING:
            self.pos = None
            self.shape = None
            self._drawn = None

    def repaint_now(self) -> None:
        data = self.model.latest_scaled
        volume = self.model.latest
        if data is None or volume is None:
            return
        shape = tuple(data.shape)
        fit = self.shape != shape
        if fit:
            self.shape = shape  # type: ignore[assignment]
            self._set_aspect(volume.voxel_size)
        if self.pos is None or not all(0 <= p < n for p, n in zip(self.pos, shape)):
            self.pos = (shape[0] // 2, shape[1] // 2, shape[2] // 2)
        levels = levels_for(data, self.contrast.value() / 10.0)
        mask = self.model.roi_mask if self.show_roi.isChecked() else None
        if mask is not None and mask.shape != shape:
            mask = None
        for name in VIEWS:
            self.images[name].setImage(slice_of(data, name, self.pos), levels=levels, autoLevels=False)
        # the overlay and the cut lines change only with the cut or the ROI, not with every volume
        key = (self.pos, id(mask))
        if key != self._drawn:
            self._drawn = key
            for name in VIEWS:
                if mask is not None:
                    rgba = ROI_RGBA[slice_of(mask, name, self.pos).astype(np.intp)]  # (w, h, 4): no colour table
                    self.overlays[name].setImage(rgba, autoLevels=False, levels=None)
                self.overlays[name].setVisible(mask is not None)
            self._place_lines()
        if fit:
            for vb in self.views.values():
                vb.autoRange(padding=0.02)
        self.volume_label.setText(f"volume {volume.index}  {shape[0]}×{shape[1]}×{shape[2]}")

    def _set_aspect(self, voxel: np.ndarray) -> None:
        sx, sy, sz = (float(v) or 1.0 for v in voxel)
        for name, (a, b) in zip(VIEWS, ((sx, sy), (sx, sz), (sy, sz))):
            tr = QtCore.QPointF(a, b)
            self.images[name].setTransform(_scale(tr))
            self.overlays[name].setTransform(_scale(tr))
        self._scales = {"axial": (sx, sy), "coronal": (sx, sz), "sagittal": (sy, sz)}
        if self.shape is not None:
            i, j, k = self.shape
            for name, (a, b), top in zip(VIEWS, self._scales.values(), (j, k, k)):
                self.labels[name].setPos(0, top * b)

    def _place_lines(self) -> None:
        assert self.pos is not None
        i, j, k = self.pos
        cuts = {"axial": (i, j), "coronal": (i, k), "sagittal": (j, k)}
        for name, (x, y) in cuts.items():
            a, b = self._scales[name]
            h, v = self.lines[name]
            v.setValue((x + 0.5) * a)
            h.setValue((y + 0.5) * b)

    def _voxel_at(self, name: str, x: float, y: float) -> tuple[int, int, int] | None:
        if self.pos is None or self.shape is None:
            return None
        i, j, k = self.pos
        x, y = int(np.floor(x)), int(np.floor(y))
        if name == "axial":
            ijk = (x, y, k)
        elif name == "coronal":
            ijk = (x, j, y)
        else:
            ijk = (i, x, y)
        if all(0 <= c < n for c, n in zip(ijk, self.shape)):
            return ijk
        return None

    def _hover_handler(self, name: str):  # type: ignore[no-untyped-def]
        def hover(event: Any) -> None:
            if event.isExit():
                return
            p = event.pos()
            self.read_voxel(name, p.x(), p.y())

        return hover

    def _click_handler(self, name: str):  # type: ignore[no-untyped-def]
        def click(event: Any) -> None:
            p = event.pos()
            ijk = self._voxel_at(name, p.x(), p.y())
            if ijk is not None:
                self.pos = ijk
                self.dirty = True
                event.accept()

        return click

    def read_voxel(self, name: str, x: float, y: float) -> str:
        """Show voxel coordinates, world mm and value at image coordinates (x, y) of a view."""
        ijk = self._voxel_at(name, x, y)
        data, volume = self.model.latest_scaled, self.model.latest
        if ijk is None or data is None or volume is None:
            return ""
        world = volume.world_coords(np.array(ijk))[0]
        roi = ""
        mask = self.model.roi_mask
        if mask is not None and mask.shape == data.shape and mask[ijk]:
            roi = "  in ROI"
        self.cursor_text = (
            f"voxel ({ijk[0]}, {ijk[1]}, {ijk[2]})  world ({world[0]:.1f}, {world[1]:.1f}, {world[2]:.1f}) mm"
            f"  value {data[ijk]:.1f}{roi}"
        )
        self.cursor.setText(self.cursor_text)
        return self.cursor_text


def _scale(p: QtCore.QPointF):  # type: ignore[no-untyped-def]
    from PySide6 import QtGui

    t = QtGui.QTransform()
    t.scale(p.x(), p.y())
    return t
