"""The incremental GLM equals an offline fit; drift bases; constant state size."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.polynomial import legendre

from rtcontrol.analysis.drift import DriftBasis
from rtcontrol.analysis.glm import IncrementalGLM, RunningModel


def test_incremental_betas_and_t_values_equal_offline_fit() -> None:
    rng = np.random.default_rng(0)
    n, p, v = 120, 5, 300
    X = np.c_[np.ones(n), rng.normal(size=(n, p - 1))]
    B = rng.normal(size=(p, v))
    Y = X @ B + rng.normal(0, 0.5, size=(n, v))
    glm = IncrementalGLM(p, v, ridge=0.0)
    for t in range(n):
        glm.add(X[t], Y[t])
    B_hat, *_ = np.linalg.lstsq(X, Y, rcond=None)
    np.testing.assert_allclose(glm.solve(), B_hat, rtol=1e-8, atol=1e-8)
    resid = Y - X @ B_hat
    var = (resid**2).sum(axis=0) / (n - p)
    np.testing.assert_allclose(glm.residual_variance(), var, rtol=1e-6)
    c = np.array([0, 1, 0, 0, 0.0])
    t_offline = (c @ B_hat) / np.sqrt(var * (c @ np.linalg.inv(X.T @ X) @ c))
    np.testing.assert_allclose(glm.t_values(c), t_offline, rtol=1e-6)


def test_state_does_not_grow_with_the_run() -> None:
    glm = IncrementalGLM(4, 50)
    sizes = []
    for t in range(300):
        glm.add(np.ones(4) * t, np.ones(50))
        if t in (10, 299):
            sizes.append(sum(a.nbytes for a in (glm.xtx, glm.xty, glm.yty)))
    assert sizes[0] == sizes[1]


def test_running_model_removes_drift_and_motion_but_keeps_task_and_level() -> None:
    rng = np.random.default_rng(1)
    n = 200
    drift = DriftBasis("legendre", n, 2)
    motion = rng.normal(0, 0.3, size=(n, 6)).cumsum(axis=0) * 0.1
    task = ((np.arange(n) // 10) % 2).astype(float)
    level = 1000.0
    y = level + 40.0 * np.array([drift.row(t)[0] for t in range(n)]) + 5.0 * motion[:, 2] + 20.0 * task
    y = y + rng.normal(0, 1.0, n)
    model = RunningModel(1, drift=drift, motion=True, n_task=1)
    cleaned = np.array([model.update(t, [y[t]], motion[t], [task[t]])[0] for t in range(n)])
    # at the end the drift and motion are gone: what is left is level + task + noise (the level
    # is shared between the constant and the non-zero-mean motion regressors, so up to an offset)
    tail = slice(100, None)
    expected = level + 20.0 * task[tail]
    assert (cleaned[tail] - expected).std() < 1.5
    assert abs((cleaned[tail] - expected).mean()) < 5.0
    on, off = cleaned[tail][task[tail] == 1].mean(), cleaned[tail][task[tail] == 0].mean()
    assert abs((on - off) - 20.0) < 1.0
    assert (y[tail] - expected).std() > 5.0  # there was drift to remove


def test_legendre_and_dct_bases() -> None:
    b = DriftBasis("legendre", 101, 3)
    assert b.size == 3
    np.testing.assert_allclose(b.row(0), [legendre.legval(-1, [0, 1]), legendre.legval(-1, [0, 0, 1]), -1.0])
    np.testing.assert_allclose(b.row(100), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(b.row(500), b.row(100))  # past the expected length: held, not extrapolated
    hp = DriftBasis.high_pass(tr=2.0, expected_volumes=200, cutoff_s=128.0)
    assert hp.kind == "dct" and hp.size == 6  # floor(2 * 200 * 2 / 128)
    rows = np.array([hp.row(t) for t in range(200)])
    np.testing.assert_allclose(rows.T @ rows / 200, np.eye(6), atol=1e-10)  # orthonormal over the run
    with pytest.raises(ValueError, match="legendre"):
        DriftBasis("spline")


def test_missing_regressors_are_reported() -> None:
    model = RunningModel(3, drift=None, motion=True)
    with pytest.raises(ValueError, match="six motion parameters"):
        model.update(0, np.zeros(3))
