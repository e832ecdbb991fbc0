"""Slow-drift regressors that can be evaluated one volume at a time.

An incremental model must not refit history when the run grows, so the drift basis is fixed in
advance over an *expected* run length ``n``: time is normalised to ``u = 2 t / (n - 1) - 1`` in
[-1, 1] and the basis is either Legendre polynomials ``P1..Pk(u)`` (polynomial detrending) or
the first ``k`` cosines of a DCT over ``n`` volumes (a high-pass filter, as SPM uses; ``k``
follows from the cut-off period). A run that goes on past ``n`` keeps the last value of each
regressor, so the model stays well conditioned and merely stops tracking new drift shapes.
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial import legendre


class DriftBasis:
    """``row(t)`` gives the drift regressors (no constant) for volume ``t`` (0-based)."""

    def __init__(self, kind: str = "legendre", expected_volumes: int = 200, order: int = 2) -> None:
        if kind not in ("legendre", "dct"):
            raise ValueError(f"drift kind must be 'legendre' or 'dct', got {kind!r}")
        if expected_volumes < 2:
            raise ValueError(f"expected run length must be at least 2 volumes, got {expected_volumes}")
        if order < 0:
            raise ValueError(f"drift order must be >= 0, got {order}")
        self.kind = kind
        self.expected_volumes = int(expected_volumes)
        self.order = int(order)

    @classmethod
    def high_pass(cls, tr: float, expected_volumes: int, cutoff_s: float = 128.0) -> DriftBasis:
        """DCT set removing periods longer than ``cutoff_s`` seconds (SPM's rule for the count)."""
        if tr <= 0 or cutoff_s <= 0:
            raise ValueError(f"TR and cut-off must be positive, got TR={tr}, cut-off={cutoff_s}")
        k = int(np.floor(2.0 * expected_volumes * tr / cutoff_s))
        return cls("dct", expected_volumes, max(k, 0))

    @property
    def size(self) -> int:
        return self.order

    def row(self, t: int) -> np.ndarray:
        n = self.expected_volumes
        tt = min(max(int(t), 0), n - 1)
        if self.order == 0:
            return np.zeros(0)
        if self.kind == "legendre":
            u = 2.0 * tt / (n - 1) - 1.0
            return np.array([legendre.legval(u, [0] * k + [1]) for k in range(1, self.order + 1)])
        k = np.arange(1, self.order + 1)
        return np.sqrt(2.0) * np.cos(np.pi * (tt + 0.5) * k / n)
