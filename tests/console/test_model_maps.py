"""The console keeps the newest statistical map per run: older ones (a restarted worker's catch-up) and
another run's are not shown, and a new run starts with none."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rtcontrol.console import events as ev
from rtcontrol.console import settings as S
from rtcontrol.console.controller import ConsoleController
from rtcontrol.console.model import RunModel

AFFINE = np.diag([3.0, 3.0, 4.0, 1.0])


def _t(value: float) -> np.ndarray:
    return np.full((4, 5, 6), value, np.float16)


def test_the_model_keeps_the_newest_map_of_each_name() -> None:
    m = RunModel()
    m.reset("run-1")
    assert m.add_map("t", 5, _t(2.0), AFFINE, 2.0)
    assert not m.add_map("t", 3, _t(9.0), AFFINE, 9.0), "an older volume's map (catch-up) is not shown"
    assert m.maps["t"].index == 5 and m.maps["t"].peak == 2.0
    assert m.add_map("t", 6, _t(-3.0), AFFINE)  # the peak is computed when not given
    assert m.maps["t"].peak == 3.0
    assert m.add_map("z", 1, _t(1.0), AFFINE, 1.0) and set(m.maps) == {"t", "z"}
    assert m.nbytes >= 2 * _t(0).nbytes
    m.reset("run-2")
    assert m.maps == {}


def test_a_map_on_its_own_grid_is_resampled_to_the_views_grid() -> None:
    m = RunModel()
    t = np.zeros((4, 5, 6), np.float16)
    t[1, 2, 3] = 5.0
    m.add_map("t", 0, t, AFFINE)
    stat = m.maps["t"]
    assert stat.on_grid((4, 5, 6), AFFINE) is stat.data  # the same grid: no copy
    shifted = AFFINE.copy()
    shifted[:3, 3] += AFFINE[:3, :3] @ np.array([1.0, 0.0, 0.0])  # the view's voxel i is the map's voxel i + 1
    moved = stat.on_grid((4, 5, 6), shifted)
    assert moved.dtype == np.float32 and moved[0, 2, 3] == 5.0 and moved.sum() == 5.0


def test_the_controller_takes_only_its_runs_maps(tmp_path: Path) -> None:
    c = ConsoleController(S.default_settings(), runs_dir=tmp_path / "runs", record=False)
    c.model.reset("run-2")
    seen: list[object] = []
    c.events.subscribe(seen.append)
    c.handle_map("run-1", 40, "t", _t(4.0), AFFINE, 4.0)  # the previous run's, late
    assert c.model.maps == {} and not seen
    c.handle_map("run-2", 3, "t", _t(4.0), AFFINE, 4.0)
    assert c.model.maps["t"].index == 3
    assert seen == [ev.MapArrived("run-2", 3, "t")]
