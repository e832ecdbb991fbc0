"""Quality metrics: FD, DVARS, Welford tSNR and spike detection against direct computations."""

from __future__ import annotations

import numpy as np

from rtcontrol.analysis.quality import QualityMonitor, RunningTsnr
from rtcontrol.rigid import framewise_displacement
from tests.support.phantom import Phantom, oblique_affine

SHAPE = (40, 40, 24)


def noisy_run(n: int, seed: int = 0) -> np.ndarray:
    base = Phantom().volume(oblique_affine(SHAPE, voxel=(4.0, 4.0, 5.0)), SHAPE).data
    rng = np.random.default_rng(seed)
    return np.stack([base + rng.normal(0, 10.0, SHAPE).astype(np.float32) for _ in range(n)])


def test_metrics_equal_direct_computation() -> None:
    vols = noisy_run(12)
    params = np.random.default_rng(3).normal(0, 0.2, size=(12, 6))
    qm = QualityMonitor()
    out = [qm.update(v, p) for v, p in zip(vols, params)]
    mask = qm.mask
    assert mask is not None and 0.1 < mask.mean() < 0.9
    assert out[0]["fd"] == 0.0 and out[0]["dvars"] == 0.0
    for t in range(1, 12):
        assert out[t]["fd"] == framewise_displacement(params[t - 1], params[t])
        d = vols[t][mask].astype(np.float64) - vols[t - 1][mask]
        expected = np.sqrt(np.mean(d**2)) / vols[t][mask].mean() * 100.0
        assert abs(out[t]["dvars"] - expected) < 1e-3 * expected
    stack = vols[:, mask].astype(np.float64)
    tsnr = stack.mean(axis=0) / stack.std(axis=0, ddof=1)
    assert abs(out[-1]["tsnr_median"] - np.median(tsnr)) < 1e-3 * np.median(tsnr)
    assert all(o["spike"] == 0.0 for o in out)


def test_welford_is_stable_for_large_means() -> None:
    rng = np.random.default_rng(0)
    x = 1e6 + rng.normal(0, 1.0, size=(500, 3))
    w = RunningTsnr(3)
    for row in x:
        w.update(row)
    np.testing.assert_allclose(w.tsnr(), x.mean(0) / x.std(0, ddof=1), rtol=1e-9)


def test_spike_volume_and_slice_dropout_are_flagged() -> None:
    vols = noisy_run(30, seed=1)
    vols[15] *= 1.08  # a global intensity jump
    vols[22][:, :, 10] *= 0.3  # one slice drops out
    qm = QualityMonitor(spike_z=5.0)
    spikes = [qm.update(v)["spike"] for v in vols]
    flagged = {i for i, s in enumerate(spikes) if s}
    assert {15, 22} <= flagged
    # the volume after a spike differs from it too (DVARS is a difference); nothing else fires
    assert flagged <= {15, 16, 22, 23}


def test_real_series_after_motion_correction(dicom_root) -> None:
    """The XA30 BOLD run: a still subject, so no spikes, FD well under 0.5 mm, a plausible tSNR."""
    from rtcontrol.analysis.steps import MotionStep, Pipeline, QualityStep
    from rtcontrol.scanner.series import read_series
    vols = next(iter(read_series(dicom_root / "siemens_xa30_enhanced_bold_20vol").values()))
    pipeline = Pipeline([MotionStep(), QualityStep()])
    metrics = [pipeline.process(v).metrics for v in vols]
    assert max(m["spike"] for m in metrics) == 0.0
    assert max(m["fd"] for m in metrics) < 0.5
    assert 20.0 < metrics[-1]["tsnr_median"] < 300.0
    assert all(0.0 < m["dvars"] < 5.0 for m in metrics[1:])
