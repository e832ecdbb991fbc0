"""The rigid-body motion convention shared by the simulator (ground truth) and motion correction.

Six parameters ``(tx, ty, tz, rx, ry, rz)``: translations in mm along the world R, A, S axes and
rotations in degrees about the world R, A, S axes, through a centre ``c`` (world mm, by default
the centre of the volume's voxel grid). The head at a moved time point relates to the reference
by::

    moved_world = Rz @ Ry @ Rx @ (ref_world - c) + c + t

so a point of the head at ``ref_world`` in the reference is found at ``moved_world`` now.
"""

from __future__ import annotations

import numpy as np


def rotation_matrix(rx_deg: float, ry_deg: float, rz_deg: float) -> np.ndarray:
    """``Rz @ Ry @ Rx`` for angles in degrees about the world R, A, S axes."""
    rx, ry, rz = np.deg2rad([rx_deg, ry_deg, rz_deg])
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def params_to_matrix(params: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """4x4 world transform (reference world -> moved world) for six parameters about ``centre``."""
    p = np.asarray(params, dtype=np.float64)
    R = rotation_matrix(p[3], p[4], p[5])
    c = np.asarray(centre, dtype=np.float64)
    M = np.eye(4)
    M[:3, :3] = R
    M[:3, 3] = c - R @ c + p[:3]
    return M


def matrix_to_params(M: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Inverse of :func:`params_to_matrix` (angles within +-90 degrees about R/A)."""
    R = M[:3, :3]
    ry = np.arcsin(-np.clip(R[2, 0], -1.0, 1.0))
    rx = np.arctan2(R[2, 1], R[2, 2])
    rz = np.arctan2(R[1, 0], R[0, 0])
    c = np.asarray(centre, dtype=np.float64)
    t = M[:3, 3] - (c - R @ c)
    return np.concatenate([t, np.rad2deg([rx, ry, rz])])


def grid_centre(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """World coordinates (mm) of the centre of a voxel grid."""
    ijk = (np.asarray(shape[:3], dtype=np.float64) - 1.0) / 2.0
    return affine[:3, :3] @ ijk + affine[:3, 3]


def framewise_displacement(prev: np.ndarray, cur: np.ndarray, radius_mm: float = 50.0) -> float:
    """Power et al. FD: sum of absolute parameter changes, rotations as arc length on a 50 mm sphere."""
    d = np.abs(np.asarray(cur, float) - np.asarray(prev, float))
    return float(d[:3].sum() + np.deg2rad(d[3:]).sum() * radius_mm)
