"""The ROI overlay is placed with the worker's own ROI code, from the project's settings."""

from __future__ import annotations

import numpy as np
import pytest

from rtcontrol.console.roi import roi_mask
from rtcontrol.scanner.synth import SynthSpec, generate


def test_voxel_box_is_inclusive() -> None:
    mask = roi_mask({"roi_kind": "box_voxel", "roi_lo": [2, 3, 1], "roi_hi": [4, 5, 1]}, (8, 8, 4), np.eye(4))
    assert mask is not None and mask.shape == (8, 8, 4)
    assert mask.sum() == 3 * 3 * 1
    assert mask[2:5, 3:6, 1].all()


def test_world_box_lands_on_the_simulated_activation() -> None:
    run = generate(SynthSpec(volumes=1))
    truth = run.truth["activation"]
    affine = np.asarray(run.truth["affine"])
    corners = np.asarray(truth["box_world_corners"])
    lo, hi = corners.min(axis=0).tolist(), corners.max(axis=0).tolist()
    mask = roi_mask({"roi_kind": "box_world", "roi_lo": lo, "roi_hi": hi}, tuple(run.truth["shape"]), affine)
    assert mask is not None
    (i0, i1), (j0, j1), (k0, k1) = truth["box_voxels"]
    centre = ((i0 + i1) // 2, (j0 + j1) // 2, (k0 + k1) // 2)
    assert mask[centre]
    assert not mask[0, 0, 0]


def test_no_roi_settings_no_overlay() -> None:
    assert roi_mask({"baseline": 5}, (8, 8, 4), np.eye(4)) is None


def test_a_box_outside_the_grid_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        roi_mask({"roi_kind": "box_world", "roi_lo": [500, 500, 500], "roi_hi": [600, 600, 600]}, (8, 8, 4), np.eye(4))
