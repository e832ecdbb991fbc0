"""DICOM patient geometry (LPS) to NIfTI-style RAS+ affines, and DICOM time strings to seconds.

Data keep the storage orientation: ``data[i, j, k]`` is DICOM column ``i``, row ``j`` of slice
``k`` (no flips, no transposes beyond a free view), so the affine carries the orientation:
``i`` steps along the row direction cosine (IOP[0:3]) by PixelSpacing[1], ``j`` along the column
direction cosine (IOP[3:6]) by PixelSpacing[0], ``k`` along the slice step vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def orientation(iop: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row cosine, column cosine and their cross product (the slice normal), all unit vectors (LPS)."""
    v = np.asarray([float(x) for x in iop], dtype=np.float64)
    if v.shape != (6,):
        raise ValueError(f"ImageOrientationPatient needs 6 values, got {len(v)}")
    row, col = v[:3], v[3:]
    row = row / np.linalg.norm(row)
    col = col / np.linalg.norm(col)
    normal = np.cross(row, col)
    return row, col, normal / np.linalg.norm(normal)


def affine_lps_to_ras(
    row: np.ndarray, col: np.ndarray, pixel_spacing: Sequence[float], slice_step: np.ndarray, origin: np.ndarray
) -> np.ndarray:
    """The RAS+ affine for data indexed [column, row, slice] from LPS vectors (mm)."""
    a = np.eye(4)
    a[:3, 0] = row * float(pixel_spacing[1])
    a[:3, 1] = col * float(pixel_spacing[0])
    a[:3, 2] = np.asarray(slice_step, dtype=np.float64)
    a[:3, 3] = np.asarray(origin, dtype=np.float64)
    return LPS_TO_RAS @ a


def tm_seconds(tm: object) -> float | None:
    """DICOM TM 'HHMMSS.ffffff' (or 'HH:MM:SS') to seconds since midnight; None if absent/bad."""
    s = str(tm or "").strip().replace(":", "")
    if len(s) < 2:
        return None
    try:
        hh = int(s[0:2])
        mm = int(s[2:4]) if len(s) >= 4 else 0
        ss = float(s[4:]) if len(s) > 4 else 0.0
    except ValueError:
        return None
    return hh * 3600 + mm * 60 + ss


def dt_seconds(dt: object) -> float | None:
    """DICOM DT 'YYYYMMDDHHMMSS.ffffff' to seconds since midnight (the date is dropped)."""
    s = str(dt or "").strip()
    for sign in ("+", "-"):  # drop a UTC offset suffix
        if sign in s[8:]:
            s = s[: 8 + s[8:].index(sign)]
    return tm_seconds(s[8:]) if len(s) > 8 else None


@overload
def ms_to_s(value: float, ndigits: int = 6) -> float: ...
@overload
def ms_to_s(value: object, ndigits: int = 6) -> float | None: ...
def ms_to_s(value: object, ndigits: int = 6) -> float | None:
    """Milliseconds (DICOM TR/TE) to seconds, rounded as dcm2niix reports them."""
    try:
        return round(float(value) / 1000.0, ndigits)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
