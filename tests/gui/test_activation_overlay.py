"""The activation overlay on the live views: the project's t-map, thresholded, in the image's orientation.

The volume is the synthetic run's oblique grid (voxel axes running left, posterior, superior: the display
flips two of them), so a map drawn without the image's re-orientation would land elsewhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rtcontrol.console import events as ev
from rtcontrol.console.model import RunModel
from rtcontrol.gui.orientation import Orientation, cut
from rtcontrol.gui.slices_panel import MAP_ALPHA, ROI_RGBA, SlicesPanel, cut_voxels
from rtcontrol.scanner.synth import SynthSpec, synth_affine
from rtcontrol.scanner.volume import Volume

pytestmark = pytest.mark.gui

SHAPE = (20, 18, 10)
AFFINE = synth_affine(SynthSpec(shape=SHAPE))
CUT = (6, 11, 4)  # voxel the views cut through
# voxels of the map in the axial slice k = 4: t = 5, 2 and -4
HOT, WEAK, COLD = (6, 11, 4), (12, 3, 4), (15, 14, 4)


def _volume(index: int, bright: tuple[int, int, int] | None = None) -> Volume:
    data = np.full(SHAPE, 100, np.int16)
    if bright is not None:
        data[bright] = 1000
    return Volume(data, AFFINE, run="run-1", index=index, tr=1.0)


def _map() -> np.ndarray:
    t = np.zeros(SHAPE, np.float32)
    t[HOT], t[WEAK], t[COLD] = 5.0, 2.0, -4.0
    return t


def _panel(qtbot: Any, model: RunModel) -> SlicesPanel:
    panel = SlicesPanel(model)
    qtbot.addWidget(panel)
    panel.resize(900, 400)
    panel.show()
    return panel


def _shown(panel: SlicesPanel, view: str = "axial") -> np.ndarray:
    """The overlay's RGBA pixels of a view where it colours something (alpha > 0)."""
    item = panel.overlays[view]
    if not item.isVisible() or item.image is None:
        return np.zeros((0, 4), np.ubyte)
    return item.image[item.image[..., 3] > 0]


def _draw(panel: SlicesPanel, model: RunModel, index: int = 0) -> None:
    model.add_volume(_volume(index, bright=HOT), 0.0)
    panel.on_event(ev.VolumeArrived(model.latest))  # type: ignore[arg-type]
    panel.refresh()


def _with_map(qtbot: Any) -> tuple[SlicesPanel, RunModel]:
    model = RunModel()
    model.reset("run-1")
    panel = _panel(qtbot, model)
    panel.clear()
    _draw(panel, model)
    panel.cut_index = panel.orientation.to_display(CUT)  # type: ignore[union-attr]
    model.add_map("t", 0, _map(), AFFINE)
    panel.on_event(ev.MapArrived("run-1", 0, "t"))
    panel.refresh()
    return panel, model


def test_the_threshold_slider_hides_and_shows_voxels(qtbot: Any) -> None:
    panel, _ = _with_map(qtbot)
    panel.set_threshold(3.0)
    panel.refresh()
    shown = _shown(panel)
    assert len(shown) == 2, "at |t| >= 3: the t = 5 and t = -4 voxels, not t = 2"
    assert panel.threshold_label.text() == "|t| ≥ 3.0"
    hot = shown[shown[:, 0] == 255]
    cold = shown[shown[:, 2] == 255]
    assert len(hot) == 1 and hot[0, 2] == 0, "positive t is drawn in hot colours"
    assert len(cold) == 1 and cold[0, 0] == 0, "negative t is drawn in cold colours"
    assert 0 < shown[0, 3] < 255, "translucent over the anatomy"

    panel.set_threshold(1.5)
    panel.refresh()
    assert len(_shown(panel)) == 3
    panel.set_threshold(4.5)
    panel.refresh()
    assert len(_shown(panel)) == 1
    panel.set_threshold(6.0)
    panel.refresh()
    assert len(_shown(panel)) == 0
    assert panel.threshold_label.text() == "|t| ≥ 6.0"


def test_the_map_lands_on_the_image_voxel_it_belongs_to(qtbot: Any) -> None:
    """The t = 5 voxel is the volume's one bright voxel: in every view both are at the same pixel."""
    panel, _ = _with_map(qtbot)
    panel.set_threshold(4.5)
    panel.refresh()
    for view in ("axial", "coronal", "sagittal"):
        image = panel.images[view].image
        overlay = panel.overlays[view].image
        assert image is not None and overlay is not None
        assert overlay.shape[:2] == image.shape[:2], view
        bright = set(zip(*np.nonzero(image > 500)))
        coloured = set(zip(*np.nonzero(overlay[..., 3] > 0)))
        assert coloured and coloured == bright, f"{view}: overlay at {coloured}, bright voxel at {bright}"


def test_the_cursor_reads_the_t_value(qtbot: Any) -> None:
    panel, _ = _with_map(qtbot)
    d = panel.orientation.to_display(HOT)  # type: ignore[union-attr]
    text = panel.read_voxel("axial", d[0] + 0.5, d[1] + 0.5)
    assert f"voxel ({HOT[0]}, {HOT[1]}, {HOT[2]})" in text and "t 5.00" in text


def test_the_toggle_switches_the_overlay_off_and_on(qtbot: Any) -> None:
    panel, _ = _with_map(qtbot)
    assert all(item.isVisible() for item in panel.overlays.values())
    panel.show_map.setChecked(False)
    panel.refresh()
    assert not any(item.isVisible() for item in panel.overlays.values())
    assert not panel.threshold.isEnabled()
    panel.show_map.setChecked(True)
    panel.refresh()
    assert len(_shown(panel)) == 2


def test_each_new_map_is_drawn(qtbot: Any) -> None:
    panel, model = _with_map(qtbot)
    t = _map()
    t[HOT] = 0.0  # the next volume's map lost the hot voxel
    model.add_map("t", 1, t, AFFINE)
    panel.on_event(ev.MapArrived("run-1", 1, "t"))
    _draw(panel, model, index=1)
    assert len(_shown(panel)) == 1
    assert "volume 1" in panel.map_label.toolTip() and panel.map_label.text() == "peak 4.0"


def test_a_new_run_clears_the_overlay(qtbot: Any) -> None:
    panel, model = _with_map(qtbot)
    assert len(_shown(panel)) == 2
    model.reset("run-2")  # what the controller does before it says the run is running
    panel.on_event(ev.StateChanged(ev.RUNNING, "run-2"))
    assert not any(item.isVisible() for item in panel.overlays.values())
    _draw(panel, model)  # the new run's first volume, no map yet
    assert not any(item.isVisible() for item in panel.overlays.values())
    assert panel.map_label.text() == "no t-map yet"


def test_a_map_on_another_grid_is_put_on_the_volume_grid(qtbot: Any) -> None:
    """A map on a reference image's grid (here: twice as fine, shifted by a voxel) still marks the right voxel."""
    panel, model = _with_map(qtbot)
    fine = AFFINE.copy()
    fine[:3, :3] /= 2
    shape = tuple(2 * n for n in SHAPE)
    t = np.zeros(shape, np.float32)
    t[2 * HOT[0]:2 * HOT[0] + 2, 2 * HOT[1]:2 * HOT[1] + 2, 2 * HOT[2]:2 * HOT[2] + 2] = 7.0
    # the fine grid's voxel centres: voxel 2v (and 2v+1) sit a quarter voxel around the coarse voxel v's centre
    fine[:3, 3] = AFFINE[:3, 3] - AFFINE[:3, :3] @ np.full(3, 0.25)
    model.add_map("t", 1, t, fine)
    panel.on_event(ev.MapArrived("run-1", 1, "t"))
    panel.set_threshold(6.0)
    panel.refresh()
    image, overlay = panel.images["axial"].image, panel.overlays["axial"].image
    assert set(zip(*np.nonzero(overlay[..., 3] > 0))) == set(zip(*np.nonzero(image > 500)))


def test_the_roi_outline_is_drawn_over_the_map(qtbot: Any) -> None:
    """Both overlays in one image: the ROI's edge in its own colour, the active voxel inside it still coloured."""
    panel, model = _with_map(qtbot)
    mask = np.zeros(SHAPE, bool)
    mask[HOT[0] - 2:HOT[0] + 3, HOT[1] - 2:HOT[1] + 3, HOT[2] - 1:HOT[2] + 2] = True
    model.roi_mask = mask
    panel.dirty = True
    panel.refresh()
    overlay = panel.overlays["axial"].image
    assert overlay is not None
    edge = np.all(overlay == ROI_RGBA[1], axis=-1)
    assert edge.sum() == 16, "the 5x5 box's outline in the axial cut"
    d = panel.orientation.to_display(HOT)  # type: ignore[union-attr]
    assert tuple(overlay[d[0], d[1]]) == (255, 255, 0, MAP_ALPHA), "the peak t is yellow"
    panel.show_roi.setChecked(False)
    panel.refresh()
    assert not np.all(panel.overlays["axial"].image == ROI_RGBA[1], axis=-1).any()


@pytest.mark.parametrize("columns", [(0, 1, 2), (1, 2, 0), (2, 0, 1)], ids=["axial", "sagittal", "coronal"])
def test_cut_voxels_are_the_voxels_each_view_shows(columns: tuple[int, int, int]) -> None:
    """For grids whose voxel axes are permuted and flipped against R, A, S: the voxel under each drawn pixel."""
    affine = np.eye(4)
    affine[:3, :3] = AFFINE[:3, list(columns)]
    o = Orientation.of(affine, SHAPE)
    index = np.indices(SHAPE)
    pos = (3, 5, 2)
    for view in ("axial", "coronal", "sagittal"):
        got = cut_voxels(o, view, pos)
        for axis in range(3):
            np.testing.assert_array_equal(got[axis], cut(o.display(index[axis]), view, pos), err_msg=view)
