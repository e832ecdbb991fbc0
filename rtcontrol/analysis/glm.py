"""An incremental general linear model, updated per volume at a cost that does not grow with
the run: it accumulates ``X'X`` (p x p), ``X'Y`` (p x V) and ``sum Y^2`` (V) and solves the
p x p normal equations for all V voxels at once (p is small and fixed: constant, drift, six
motion parameters, a few task regressors). This is the cumulative GLM real-time packages use
(Turbo-BrainVoyager, OpenNFT); it gives the same betas as an offline fit over the volumes seen.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import linalg

from rtcontrol.analysis.drift import DriftBasis


class IncrementalGLM:
    """``Y[t] = X[t] @ B + e`` for V signals; :meth:`add` one row per volume, :meth:`solve` any time.

    ``ridge`` (relative to the mean diagonal of ``X'X``) keeps the solution defined before there
    are as many volumes as regressors; it is negligible once the model is determined.
    """

    def __init__(self, n_regressors: int, n_signals: int, ridge: float = 1e-6) -> None:
        if n_regressors < 1 or n_signals < 1:
            raise ValueError(f"need at least one regressor and one signal, got {n_regressors}, {n_signals}")
        self.p, self.v = int(n_regressors), int(n_signals)
        self.ridge = float(ridge)
        self.xtx = np.zeros((self.p, self.p))
        self.xty = np.zeros((self.p, self.v))
        self.yty = np.zeros(self.v)
        self.n = 0
        self._beta: np.ndarray | None = None
        self._lam = 0.0  # the ridge added to the diagonal in the last solve

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add one volume: design row ``x`` (p,) and signals ``y`` (V,)."""
        x = np.asarray(x, dtype=np.float64).reshape(self.p)
        y = np.asarray(y, dtype=np.float64).reshape(self.v)
        self.xtx += np.outer(x, x)
        self.xty += np.einsum("p,v->pv", x, y)
        self.yty += y * y
        self.n += 1
        self._beta = None

    def solve(self) -> np.ndarray:
        """Betas (p, V) for everything added so far (cached until the next :meth:`add`)."""
        if self._beta is None:
            if self.n == 0:
                raise RuntimeError("the model has no volumes yet")
            a = self.xtx.copy()
            diag = np.diag(a).copy()
            scale = diag.mean() if diag.mean() > 0 else 1.0
            self._lam = self.ridge * scale + 1e-12
            a[np.diag_indices(self.p)] += self._lam
            # inverse of the small p x p matrix, then an einsum: no multi-threaded BLAS call whose
            # threads would fight other processes for the cores (one core per run)
            inv = linalg.cho_solve(linalg.cho_factor(a, check_finite=False), np.eye(self.p), check_finite=False)
            self._beta = np.einsum("pq,qv->pv", inv, self.xty)
        return self._beta

    def residual_variance(self) -> np.ndarray:
        """Per-signal residual variance ``RSS / (n - p)`` (inf while n <= p).

        ``RSS = y'y - 2 b'X'y + b'X'X b``, and since ``(X'X + lam I) b = X'y`` the last term is ``b'X'y - lam b'b``:
        ``RSS = y'y - b'X'y - lam b'b``, exact and linear in p per signal (the quadratic form costs p^2 per signal).
        """
        b = self.solve()
        rss = self.yty - np.einsum("pv,pv->v", b, self.xty) - self._lam * np.einsum("pv,pv->v", b, b)
        dof = self.n - self.p
        return np.full(self.v, np.inf) if dof <= 0 else np.maximum(rss, 0.0) / dof

    def t_values(self, contrast: np.ndarray) -> np.ndarray:
        """t statistic of ``contrast @ B`` per signal (0 while the model is underdetermined)."""
        c = np.asarray(contrast, dtype=np.float64).reshape(self.p)
        b = self.solve()
        var = self.residual_variance()
        if not np.all(np.isfinite(var)):
            return np.zeros(self.v)
        a = self.xtx + np.eye(self.p) * 1e-12
        cvc = float(c @ np.linalg.solve(a, c))
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (c @ b) / np.sqrt(var * cvc)
        return np.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)


class RunningModel:
    """Detrending and nuisance removal per volume: constant + drift + motion (+ task regressors).

    Column order: ``[1, drift..., motion(6)..., task...]``. :meth:`update` adds the volume and
    returns its *cleaned* signals: the data minus the current drift and motion fit, with the
    constant and the task effects kept, so the result stays in the original units.
    """

    def __init__(
        self,
        n_signals: int,
        drift: DriftBasis | None = None,
        motion: bool = True,
        n_task: int = 0,
        ridge: float = 1e-6,
    ) -> None:
        self.drift = drift
        self.n_drift = drift.size if drift is not None else 0
        self.n_motion = 6 if motion else 0
        self.n_task = int(n_task)
        self.p = 1 + self.n_drift + self.n_motion + self.n_task
        self.glm = IncrementalGLM(self.p, n_signals, ridge=ridge)
        self.nuisance = np.zeros(self.p, dtype=bool)
        self.nuisance[1 : 1 + self.n_drift + self.n_motion] = True

    def row(self, t: int, motion: ArrayLike | None = None, task: ArrayLike | None = None) -> np.ndarray:
        """The design row for volume ``t`` (0-based within the modelled part of the run)."""
        parts = [np.ones(1)]
        if self.drift is not None:
            parts.append(self.drift.row(t))
        if self.n_motion:
            if motion is None:
                raise ValueError("this model has motion regressors: pass the six motion parameters")
            parts.append(np.asarray(motion, dtype=np.float64).reshape(6))
        if self.n_task:
            if task is None:
                raise ValueError(f"this model has {self.n_task} task regressor(s): pass their values")
            parts.append(np.asarray(task, dtype=np.float64).reshape(self.n_task))
        return np.concatenate(parts)

    def update(self, t: int, y: np.ndarray, motion: ArrayLike | None = None,
               task: ArrayLike | None = None) -> np.ndarray:
        """Add volume ``t`` and return its cleaned signals (V,)."""
        x = self.row(t, motion, task)
        self.glm.add(x, y)
        return np.asarray(y, dtype=np.float64).reshape(-1) - self.nuisance_fit(x)

    def nuisance_fit(self, x: np.ndarray) -> np.ndarray:
        """Drift + motion part of the current fit for design row(s) ``x``."""
        b = self.glm.solve()
        return np.einsum("...p,pv->...v", np.asarray(x, dtype=np.float64)[..., self.nuisance], b[self.nuisance])
