"""An independent, slow, high-accuracy rigid registration used only as a test oracle.

Deliberately a different code path from :mod:`rtcontrol.analysis.motion`: no smoothing, no
subsampling, no precomputed gradients, no inverse-compositional trick; every head voxel of the
reference at full resolution, the moving volume interpolated with cubic B-splines, the six
parameters of :mod:`rtcontrol.rigid` (plus an intensity gain) found by
``scipy.optimize.least_squares`` with finite-difference Jacobians, to a tight tolerance.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, optimize

from rtcontrol.rigid import grid_centre, params_to_matrix
from rtcontrol.scanner.volume import Volume


def reference_register(reference: Volume, moving: Volume, start: np.ndarray | None = None) -> np.ndarray:
    """Six parameters (mm, degrees) taking ``reference`` world points to where ``moving`` shows them."""
    ref = reference.scaled(np.float64)
    mask = ref > 0.1 * np.percentile(ref, 99)
    ijk = np.argwhere(mask).astype(np.float64)
    x = ijk @ reference.affine[:3, :3].T + reference.affine[:3, 3]
    r = ref[mask]
    coeffs = ndimage.spline_filter(moving.scaled(np.float64), order=3, mode="nearest")
    to_vox = np.linalg.inv(moving.affine)
    c = grid_centre(reference.affine, reference.shape)

    def residuals(q: np.ndarray) -> np.ndarray:
        M = to_vox @ params_to_matrix(q[:6], c)
        v = x @ M[:3, :3].T + M[:3, 3]
        w = ndimage.map_coordinates(coeffs, v.T, order=3, mode="nearest", prefilter=False)
        return (w - q[6] * r) / r.mean()

    q0 = np.concatenate([np.zeros(6) if start is None else start, [1.0]])
    fit = optimize.least_squares(residuals, q0, x_scale=np.r_[np.ones(6), 0.01], xtol=1e-10, ftol=1e-12, gtol=1e-12,
                                 diff_step=1e-4)
    if not fit.success:
        raise RuntimeError(f"reference registration failed: {fit.message}")
    return fit.x[:6]
