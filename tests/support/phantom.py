"""An analytic head phantom for motion tests: exact values at any world point, so a moved volume
is sampled from the formula (no interpolation in the ground truth)."""

from __future__ import annotations

import numpy as np

from rtcontrol.rigid import grid_centre, params_to_matrix, rotation_matrix
from rtcontrol.scanner.volume import Volume


def oblique_affine(shape=(64, 64, 36), voxel=(3.0, 3.0, 3.5), tilt_deg=7.0) -> np.ndarray:
    """An axial-oblique grid centred near the origin (rotated about R, like a tilted EPI slab)."""
    A = np.eye(4)
    A[:3, :3] = rotation_matrix(tilt_deg, 0.0, 0.0) @ np.diag(voxel)
    centre = A[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    A[:3, 3] = -centre + np.array([1.0, -4.0, 6.0])
    return A


class Phantom:
    """A smooth ellipsoidal head with internal structure; ``values(world_points)`` in any pose."""

    def __init__(self, seed: int = 1, radii=(62.0, 78.0, 52.0), edge_mm: float = 2.5) -> None:
        rng = np.random.default_rng(seed)
        self.radii = np.asarray(radii)
        self.edge = edge_mm
        n = 14
        self.blob_centres = rng.uniform(-0.6, 0.6, size=(n, 3)) * self.radii
        self.blob_sigma = rng.uniform(6.0, 14.0, size=n)
        self.blob_amp = rng.uniform(-350.0, 350.0, size=n)

    def values(self, xyz: np.ndarray) -> np.ndarray:
        x = np.asarray(xyz, dtype=np.float64)
        r = np.sqrt(((x / self.radii) ** 2).sum(axis=1))
        dist_mm = (1.0 - r) * self.radii.min()
        out = 1000.0 / (1.0 + np.exp(-dist_mm / self.edge * 1.7))
        for c, s, a in zip(self.blob_centres, self.blob_sigma, self.blob_amp):
            out += a * np.exp(-((x - c) ** 2).sum(axis=1) / (2 * s * s)) * (r < 1.1)
        return out

    def volume(self, affine: np.ndarray, shape, params=None, centre=None, noise: float = 0.0,
               rng: np.random.Generator | None = None, index: int = 0) -> Volume:
        """The phantom moved by ``params`` (rtcontrol.rigid convention about ``centre``), sampled on the grid."""
        ijk = np.indices(shape).reshape(3, -1).T.astype(np.float64)
        world = ijk @ affine[:3, :3].T + affine[:3, 3]
        if params is not None:
            c = grid_centre(affine, shape) if centre is None else centre
            T = params_to_matrix(params, c)
            Tinv = np.linalg.inv(T)
            world = world @ Tinv[:3, :3].T + Tinv[:3, 3]
        data = self.values(world).reshape(shape)
        if noise:
            data = data + (rng or np.random.default_rng(0)).normal(0.0, noise, size=data.shape)
        return Volume(data=data.astype(np.float32), affine=affine, index=index, tr=2.0)


def random_motion(n: int, max_mm: float = 3.0, max_deg: float = 3.0, seed: int = 0) -> np.ndarray:
    """A smooth random walk of head poses, the first at rest, bounded by the maxima."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 1, size=(n, 6)).cumsum(axis=0)
    steps -= steps[0]
    scale = np.abs(steps).max(axis=0)
    scale[scale == 0] = 1.0
    p = steps / scale * np.array([max_mm] * 3 + [max_deg] * 3)
    return p
