"""The live views show every acquisition in the standard orientation: checked on the rendered pixels.

Each real series' first volume is given, as its voxel values, the world coordinate (RAS+ mm, from its own
affine) along one axis; the picture on screen must then be brighter at the edge labelled with that axis's
positive direction (R, A or S) than at the opposite edge. Series: the coronal Siemens XA60 acquisition, the
head-to-foot Siemens mosaic, the 13.3° oblique Philips series, and (the fixtures hold no sagittal series) the
real GE axial series re-stored as a sagittal acquisition: its voxel axes permuted and flipped, the affine with
them, so the same anatomy is described by a sagittal grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6 import QtGui, QtWidgets

from rtcontrol.console.model import RunModel
from rtcontrol.gui.orientation import VIEWS, Orientation, edge_labels
from rtcontrol.gui.slices_panel import SlicesPanel
from rtcontrol.scanner.series import read_series
from rtcontrol.scanner.volume import Volume

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]

AXIS = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}


def _first_volume(folder: Path) -> Volume:
    series = read_series(folder)
    assert series, f"no series read from {folder}"
    return next(iter(series.values()))[0]


def _as_sagittal(v: Volume) -> Volume:
    """The same anatomy on a sagittal grid: voxel axes (A, S, R) with the first one running posterior."""
    data = np.transpose(v.data, (1, 2, 0))[::-1]
    a = v.affine[:, [1, 2, 0, 3]].copy()
    n = data.shape[0]
    a[:3, 3] += a[:3, 0] * (n - 1)  # voxel 0 of the flipped axis is the old last one
    a[:3, 0] *= -1
    return Volume(np.ascontiguousarray(data), a, index=0)


def _volumes(dicom_root: Path) -> dict[str, Volume]:
    return {
        "coronal": _first_volume(dicom_root / "siemens_xa60_enhanced_sms2"),
        "head-to-foot": _first_volume(dicom_root / "siemens_mosaic_ep2d_int_HF_6vol"),
        "oblique": _first_volume(dicom_root / "philips_epi_magdeburg"),
        "sagittal": _as_sagittal(_first_volume(dicom_root / "ge_epi_nih_10vol")),
    }


def _world_axis(v: Volume, axis: int) -> np.ndarray:
    ijk = np.indices(v.shape).reshape(3, -1).T
    return v.world_coords(ijk)[:, axis].reshape(v.shape).astype(np.float32)


def _gray(image: Any, x: float, y: float) -> int:
    return QtGui.qGray(image.pixel(int(x), int(y)))


def _edge_brightness(panel: SlicesPanel, view: str) -> dict[str, int]:
    """Grey level just inside each edge of a view's image, as drawn on screen (away from the labels and cut lines)."""
    panel.graphics.repaint()
    QtWidgets.QApplication.processEvents()
    shot = panel.graphics.grab().toImage()
    rect = panel.graphics.mapFromScene(panel.images[view].sceneBoundingRect()).boundingRect()
    x0, y0, w, h = rect.x(), rect.y(), rect.width(), rect.height()
    assert w > 40 and h > 20, f"{view}: the image is drawn {w}x{h} px"
    return {
        "left": _gray(shot, x0 + 0.12 * w, y0 + 0.3 * h),
        "right": _gray(shot, x0 + 0.88 * w, y0 + 0.3 * h),
        "top": _gray(shot, x0 + 0.3 * w, y0 + 0.12 * h),
        "bottom": _gray(shot, x0 + 0.3 * w, y0 + 0.88 * h),
    }


@pytest.mark.parametrize("convention", ["radiological", "neurological"])
def test_a_known_direction_lands_on_its_labelled_edge(qtbot: Any, dicom_root: Path, convention: str) -> None:
    model = RunModel()
    panel = SlicesPanel(model, convention=convention)
    qtbot.addWidget(panel)
    panel.resize(1200, 420)
    panel.show()
    qtbot.waitExposed(panel)
    for acquisition, volume in _volumes(dicom_root).items():
        for view in VIEWS:
            labels = panel.edge_text(view)
            assert labels == edge_labels(view, convention)
            for a_edge, b_edge in (("left", "right"), ("top", "bottom")):
                letter = labels[a_edge]
                axis = AXIS[letter]
                probe = Volume(_world_axis(volume, axis), volume.affine, index=0)
                model.reset("orientation")
                model.add_volume(probe, 0.0)
                panel.clear()
                panel.repaint_now()
                g = _edge_brightness(panel, view)
                brighter = a_edge if letter in "RAS" else b_edge
                darker = b_edge if brighter == a_edge else a_edge
                assert g[brighter] > g[darker] + 40, (
                    f"{acquisition}, {view} view ({convention}): the {a_edge} edge says {labels[a_edge]!r} and the "
                    f"{b_edge} edge {labels[b_edge]!r}, but on screen {a_edge}={g[a_edge]} {b_edge}={g[b_edge]} "
                    f"(grey level of the world {'RAS'[axis]} coordinate)")


def test_standard_edges() -> None:
    assert edge_labels("axial", "radiological") == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    assert edge_labels("axial", "neurological") == {"left": "L", "right": "R", "top": "A", "bottom": "P"}
    assert edge_labels("coronal", "radiological") == {"left": "R", "right": "L", "top": "S", "bottom": "I"}
    assert edge_labels("sagittal", "neurological") == {"left": "A", "right": "P", "top": "S", "bottom": "I"}
    with pytest.raises(ValueError, match="left/right convention"):
        edge_labels("axial", "sideways")


def test_cursor_reads_the_acquired_voxel_under_the_display(dicom_root: Path) -> None:
    """Display and voxel indices round-trip, and the display array holds the acquired voxel's value."""
    v = _first_volume(dicom_root / "siemens_mosaic_ep2d_int_HF_6vol")
    o = Orientation.of(v.affine, v.shape)
    shown = o.display(v.data)
    assert shown.shape == o.display_shape
    for ijk in [(0, 0, 0), (5, 60, 30), (63, 1, 35)]:
        d = o.to_display(ijk)
        assert o.to_voxel(d) == ijk
        assert shown[d] == v.data[ijk]


def test_captions_stay_after_images_are_drawn(qtbot: Any, dicom_root: Path) -> None:
    model = RunModel()
    panel = SlicesPanel(model)
    qtbot.addWidget(panel)
    panel.resize(900, 400)
    panel.show()
    model.add_volume(_first_volume(dicom_root / "siemens_xa60_enhanced_sms2"), 0.0)
    panel.repaint_now()
    qtbot.waitExposed(panel)
    QtWidgets.QApplication.processEvents()
    for view in VIEWS:
        cap = panel.captions[view]
        assert cap.text == view and cap.isVisible()
        box = panel.views[view].sceneBoundingRect()
        assert cap.sceneBoundingRect().bottom() <= box.top() + 1, f"{view}: the caption is drawn over the view"
        assert box.height() > 100
