"""Motion correction against exact ground truth: an analytic phantom and the simulator's runs."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from rtcontrol.analysis.motion import MotionCorrector
from rtcontrol.rigid import grid_centre, matrix_to_params, params_to_matrix
from rtcontrol.scanner.synth import SynthSpec, generate
from tests.support.phantom import Phantom, oblique_affine, random_motion

SHAPE = (64, 64, 36)


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return Phantom(seed=1)


def rms_error(est: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.sqrt(((np.asarray(est) - np.asarray(truth)) ** 2).mean(axis=0))


def test_identical_volume_gives_zero_motion(phantom: Phantom) -> None:
    A = oblique_affine(SHAPE)
    vol = phantom.volume(A, SHAPE, noise=5.0)
    mc = MotionCorrector()
    first = mc.process(vol)
    again = mc.process(vol)
    assert first.registered and again.registered
    np.testing.assert_allclose(again.params, 0.0, atol=1e-4)
    # warm start: nothing to do the second time
    assert again.converged and again.iterations <= 3


def test_sign_convention_follows_rigid(phantom: Phantom) -> None:
    """Head 2 mm to the right and turned 2 degrees about S (R towards A): tx = +2, rz = +2."""
    A = oblique_affine(SHAPE)
    mc = MotionCorrector()
    mc.process(phantom.volume(A, SHAPE))
    truth = np.array([2.0, 0.0, 0.0, 0.0, 0.0, 2.0])
    result = mc.process(phantom.volume(A, SHAPE, truth, index=1))
    np.testing.assert_allclose(result.params, truth, atol=0.01)
    np.testing.assert_allclose(result.matrix, params_to_matrix(result.params, mc.centre), atol=1e-9)
    assert result.metrics()["tx"] == pytest.approx(result.params[0])


def test_phantom_3mm_3deg_oblique_anisotropic(phantom: Phantom) -> None:
    A = oblique_affine(SHAPE, voxel=(3.0, 3.0, 3.5), tilt_deg=7.0)
    truth = random_motion(25, max_mm=3.0, max_deg=3.0, seed=4)
    rng = np.random.default_rng(9)
    mc = MotionCorrector()
    est = [mc.process(phantom.volume(A, SHAPE, p, noise=5.0, rng=rng, index=i)).params for i, p in enumerate(truth)]
    err = rms_error(est, truth)
    assert np.abs(truth).max(axis=0).min() > 2.5  # every parameter really goes up to ~3 mm / 3 degrees
    assert np.all(err[:3] <= 0.05), f"translation RMS error {err[:3]} mm"
    assert np.all(err[3:] <= 0.05), f"rotation RMS error {err[3:]} degrees"


@pytest.mark.parametrize("seed", [3, 11])
def test_synth_run_known_motion(seed: int) -> None:
    """The simulator's run (activation, drift, uint16): rotations up to ~3 degrees, 5 mm shifts.

    Noise 0.5% of the brain mean: the simulator's head is nearly an ellipsoid of revolution about
    S, so rz is noise-limited (at 1% noise the slow full-resolution least-squares oracle is off by
    0.4 degrees RMS and this estimator by ~0.05); real heads carry far more rotational structure.
    """
    run = generate(SynthSpec(volumes=40, motion_mm=5.0, noise_pct=0.5, seed=seed))
    truth = np.asarray(run.truth["motion"]["params"])
    mc = MotionCorrector()
    est = np.array([mc.process(run.to_volume(t)).params for t in range(run.spec.volumes)])
    np.testing.assert_allclose(mc.centre, run.truth["motion"]["centre"], atol=1e-9)
    err = rms_error(est, truth)
    assert np.abs(truth[:, 3:]).max() > 2.0
    assert np.all(err[:3] <= 0.05), f"translation RMS error {err[:3]} mm"
    assert np.all(err[3:] <= 0.05), f"rotation RMS error {err[3:]} degrees"


def test_reference_from_an_earlier_run_on_another_grid(phantom: Phantom, tmp_path) -> None:
    """A NIfTI reference on a different (axial, 2.5 mm) grid: world-space registration still recovers T."""
    A_run = oblique_affine(SHAPE, tilt_deg=9.0)
    ref_shape = (72, 80, 56)
    A_ref = np.diag([2.5, 2.5, 2.5, 1.0])
    A_ref[:3, 3] = -A_ref[:3, :3] @ ((np.asarray(ref_shape) - 1) / 2.0)
    ref = phantom.volume(A_ref, ref_shape)
    path = tmp_path / "earlier_run_mean.nii.gz"
    nib.save(nib.Nifti1Image(ref.data, A_ref), path)

    mc = MotionCorrector(path, reslice="linear")
    c_run = grid_centre(A_run, SHAPE)
    for i, p in enumerate([np.zeros(6), np.array([1.0, -2.0, 0.5, 1.5, -1.0, 2.0])]):
        vol = phantom.volume(A_run, SHAPE, p, centre=c_run, noise=3.0, index=i)
        result = mc.process(vol)
        # the same world transform, expressed about the reference grid's centre
        expected = matrix_to_params(params_to_matrix(p, c_run), grid_centre(A_ref, ref_shape))
        np.testing.assert_allclose(result.params, expected, atol=0.03)
        assert result.resliced is not None and result.resliced.shape == ref_shape
        np.testing.assert_allclose(result.affine, A_ref)


@pytest.mark.parametrize("order", ["linear", "cubic"])
def test_resliced_volume_matches_reference(phantom: Phantom, order: str) -> None:
    A = oblique_affine(SHAPE)
    ref = phantom.volume(A, SHAPE)
    mc = MotionCorrector(ref, reslice=order)
    moved = phantom.volume(A, SHAPE, [1.2, -0.8, 1.5, 2.0, -1.0, 1.5], index=1)
    result = mc.process(moved)
    inner = (slice(8, -8), slice(8, -8), slice(6, -6))
    before = np.abs(moved.data[inner] - ref.data[inner]).mean()
    after = np.abs(result.resliced[inner] - ref.data[inner]).mean()
    # trilinear blurs the phantom's sharp edges a little; cubic B-splines much less
    assert after < (0.2 if order == "linear" else 0.08) * before, (after, before)


def test_chosen_reference_volume_and_warm_start(phantom: Phantom) -> None:
    A = oblique_affine(SHAPE)
    truth = random_motion(6, max_mm=1.0, max_deg=1.0, seed=2)
    vols = [phantom.volume(A, SHAPE, p, index=i) for i, p in enumerate(truth)]
    mc = MotionCorrector(reference_index=2)
    results = [mc.process(v) for v in vols]
    assert [r.registered for r in results] == [False, False, True, True, True, True]
    assert results[0].resliced is not None and results[0].resliced.shape == SHAPE
    ref_T = params_to_matrix(truth[2], mc.centre)
    for r, p in zip(results[2:], truth[2:]):
        # relative to volume 2: T_rel = T_p @ T_2^-1
        expected = matrix_to_params(params_to_matrix(p, mc.centre) @ np.linalg.inv(ref_T), mc.centre)
        np.testing.assert_allclose(r.params, expected, atol=0.02)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="reslice"):
        MotionCorrector(reslice="sinc")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MotionCorrector("/nonexistent/ref.nii")


def test_a_corrupt_volume_is_reported_and_does_not_spoil_the_next(phantom: Phantom) -> None:
    from rtcontrol.analysis.motion import MotionError
    from rtcontrol.scanner.volume import Volume

    A = oblique_affine(SHAPE)
    mc = MotionCorrector()
    mc.process(phantom.volume(A, SHAPE))
    with pytest.raises(MotionError, match="no signal"):
        mc.process(Volume(data=np.zeros(SHAPE, np.float32), affine=A, index=1))
    truth = np.array([0.5, -0.3, 0.2, 0.4, 0.1, -0.3])
    result = mc.process(phantom.volume(A, SHAPE, truth, index=2))
    np.testing.assert_allclose(result.params, truth, atol=0.01)
