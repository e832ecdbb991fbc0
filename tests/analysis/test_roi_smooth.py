"""ROIs on oblique grids, masks in another space, percent signal change, smoothing widths."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from rtcontrol.analysis.drift import DriftBasis
from rtcontrol.analysis.roi import PercentSignalChange, RoiSpec
from rtcontrol.analysis.smooth import smooth
from tests.support.phantom import oblique_affine

SHAPE = (48, 48, 30)


def test_voxel_box_is_inclusive() -> None:
    roi = RoiSpec.box_voxel([2, 3, 4], [5, 3, 6]).on_grid(SHAPE, np.eye(4))
    assert roi.n_voxels == 4 * 1 * 3
    data = np.zeros(SHAPE, np.float32)
    data[2:6, 3, 4:7] = 7.0
    assert roi.mean(data) == 7.0


def test_world_box_on_an_oblique_grid() -> None:
    A = oblique_affine(SHAPE, voxel=(3.0, 3.0, 3.5), tilt_deg=12.0)
    lo, hi = [-10.0, -20.0, 0.0], [14.0, 4.0, 20.0]
    roi = RoiSpec.box_world(lo, hi).on_grid(SHAPE, A)
    ijk = np.argwhere(roi.mask)
    xyz = ijk @ A[:3, :3].T + A[:3, 3]
    assert np.all(xyz >= lo) and np.all(xyz <= hi)
    # and no voxel centre inside the box was missed
    allijk = np.indices(SHAPE).reshape(3, -1).T
    allxyz = allijk @ A[:3, :3].T + A[:3, 3]
    assert roi.n_voxels == int(np.all((allxyz >= lo) & (allxyz <= hi), axis=1).sum())


def test_mask_in_another_space_is_resampled_once(tmp_path) -> None:
    """A 1 mm axial sphere mask lands on the same world voxels as the sphere on the run's grid."""
    A_run = oblique_affine(SHAPE, voxel=(3.0, 3.0, 3.5), tilt_deg=10.0)
    centre, radius = np.array([5.0, -8.0, 10.0]), 15.0
    A_mask = np.eye(4)
    A_mask[:3, 3] = [-60.0, -70.0, -50.0]
    ijk = np.indices((120, 140, 110)).reshape(3, -1).T
    inside = np.linalg.norm(ijk + A_mask[:3, 3] - centre, axis=1) <= radius
    path = tmp_path / "sphere_1mm.nii.gz"
    nib.save(nib.Nifti1Image(inside.reshape(120, 140, 110).astype(np.uint8), A_mask), path)

    roi = RoiSpec.mask(path).on_grid(SHAPE, A_run)
    run_xyz = np.indices(SHAPE).reshape(3, -1).T @ A_run[:3, :3].T + A_run[:3, 3]
    truth = np.linalg.norm(run_xyz - centre, axis=1) <= radius
    got = roi.mask.reshape(-1)
    assert (got & truth).sum() / (got | truth).sum() > 0.9  # Jaccard overlap: edge voxels may differ
    linear = RoiSpec.mask(path, interpolation="linear").on_grid(SHAPE, A_run)
    assert np.all((linear.weights >= 0.5) & (linear.weights <= 1.0))


def test_roi_errors_say_what_and_where(tmp_path) -> None:
    with pytest.raises(ValueError, match="empty on the run's grid: world box"):
        RoiSpec.box_world([900, 900, 900], [910, 910, 910]).on_grid(SHAPE, np.eye(4))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RoiSpec.mask(tmp_path / "nope.nii").on_grid(SHAPE, np.eye(4))
    bad = tmp_path / "bad.nii"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="not a readable NIfTI"):
        RoiSpec.mask(bad).on_grid(SHAPE, np.eye(4))
    roi = RoiSpec.box_voxel([0, 0, 0], [1, 1, 1]).on_grid(SHAPE, np.eye(4))
    with pytest.raises(ValueError, match="placed on a"):
        roi.mean(np.zeros((4, 4, 4)))


def test_percent_signal_change_removes_drift() -> None:
    n = 120
    task = ((np.arange(n) // 10) % 2).astype(float)
    drift = np.linspace(0, 30.0, n)  # 3% linear drift over the run
    y = 1000.0 + drift + 20.0 * task
    psc = PercentSignalChange(0, 10, drift=DriftBasis("legendre", n, 1), motion=False, n_task=1)
    out = np.array([psc.update(t, y[t], task=[task[t]]) for t in range(n)])
    assert np.isnan(out[:9]).all() and not np.isnan(out[9:]).any()
    late = slice(60, None)
    np.testing.assert_allclose(out[late], 2.0 * task[late], atol=0.05)  # 20 / 1000 = 2%, drift gone


@pytest.mark.parametrize("voxel", [(2.0, 2.0, 2.0), (3.0, 3.0, 4.5)])
def test_smoothing_fwhm_is_in_millimetres(voxel) -> None:
    A = np.diag([*voxel, 1.0])
    data = np.zeros((41, 41, 41), np.float32)
    data[20, 20, 20] = 1.0
    out = smooth(data, A, 8.0)
    assert abs(out.sum() - 1.0) < 1e-3
    for axis, size in enumerate(voxel):
        profile = out.sum(axis=tuple(a for a in range(3) if a != axis))
        x = (np.arange(41) - 20) * size
        sd = np.sqrt((profile * x**2).sum() / profile.sum())
        assert abs(sd * 2.3548 - 8.0) < 0.25
