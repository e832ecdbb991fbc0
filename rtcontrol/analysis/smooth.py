"""Gaussian spatial smoothing with the kernel given as FWHM in millimetres.

Voxels may be anisotropic (3 x 3 x 3.5 mm is common), so the kernel width in voxels is
worked out per axis from the affine's column lengths; scipy's separable filter does the rest.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel edge lengths (mm) from the affine's columns."""
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))


def fwhm_to_sigma(fwhm_mm: float, affine: np.ndarray) -> np.ndarray:
    """Per-axis Gaussian sigma in voxels for an isotropic kernel of ``fwhm_mm``."""
    if fwhm_mm < 0:
        raise ValueError(f"smoothing FWHM must be >= 0 mm, got {fwhm_mm}")
    return float(fwhm_mm) / FWHM_PER_SIGMA / voxel_sizes(affine)


def smooth(data: np.ndarray, affine: np.ndarray, fwhm_mm: float, out: np.ndarray | None = None) -> np.ndarray:
    """``data`` smoothed by an isotropic Gaussian of ``fwhm_mm`` (float32; 0 returns a float32 copy)."""
    src = np.asarray(data, dtype=np.float32)
    if out is None:
        out = np.empty(src.shape, dtype=np.float32)
    if fwhm_mm <= 0:
        np.copyto(out, src)
        return out
    ndimage.gaussian_filter(src, fwhm_to_sigma(fwhm_mm, affine), mode="nearest", truncate=3.0, output=out)
    return out
