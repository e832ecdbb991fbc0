"""Real-time rigid-body motion correction of each volume to a reference volume.

Parameters follow :mod:`rtcontrol.rigid` exactly (the convention the simulator's ground truth
uses): ``(tx, ty, tz)`` in mm along world R, A, S and ``(rx, ry, rz)`` in degrees about world
R, A, S through the centre of the *reference* grid, with
``moved_world = Rz Ry Rx (ref_world - c) + c + t``. So a head that moved 1 mm to the right
between the reference and volume ``n`` gives ``tx = +1`` for volume ``n``.

The method is Gauss-Newton least squares, as in AFNI's 3dvolreg and SPM's realign, written in
the *inverse compositional* form (Baker & Matthews 2004): the Jacobian is built once from the
gradients of the smoothed reference, so each iteration costs one sampling of the smoothed volume at a fixed set
of reference points (at most ``max_points``, spread over the head) plus a 6 x 6 solve. Two
levels: a coarse one (Gaussian FWHM twice the largest voxel edge, trilinear sampling, iterated
until the update is below ``tolerance_mm``) and a fine one (FWHM one voxel edge, cubic B-spline
sampling, ``refine_iterations`` steps) that removes the bias of trilinear interpolation and of
heavy smoothing; on real series it agrees with a full-resolution least-squares fit to a few
hundredths of a mm/degree (``tests/analysis/test_motion_real.py``). Everything is in world
millimetres through both affines, so oblique and anisotropic voxels are handled, and a
reference from an earlier run on a different grid works as well. Each volume starts from the
previous volume's estimate (the head moves little between volumes), so a few iterations
suffice. A global intensity gain is fitted alongside (optional) so that a reference from an
earlier run or a slow scanner drift does not bias the estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from rtcontrol.analysis.images import load_volume
from rtcontrol.analysis.smooth import smooth, voxel_sizes
from rtcontrol.errors import RtcontrolError
from rtcontrol.rigid import grid_centre, matrix_to_params, params_to_matrix
from rtcontrol.scanner.volume import Volume

RESLICE_ORDERS = {"linear": 1, "cubic": 3}
FD_RADIUS_MM = 50.0
#: The coarse level stops at this multiple of the tolerance: the fine level polishes what is left.
COARSE_TOLERANCE_FACTOR = 10.0


@dataclass
class MotionResult:
    """One volume's registration to the reference."""

    params: np.ndarray  #: (6,) tx, ty, tz (mm), rx, ry, rz (degrees), see :mod:`rtcontrol.rigid`
    matrix: np.ndarray  #: 4x4 world transform, reference world -> this volume's world
    resliced: np.ndarray | None  #: float32 volume on the reference grid (None if reslicing is off)
    affine: np.ndarray  #: affine of ``resliced`` (the reference grid)
    iterations: int
    converged: bool
    registered: bool = True  #: False for volumes before a chosen reference volume arrived

    def metrics(self) -> dict[str, float]:
        """The six parameters under the names the console plots."""
        return dict(zip(("tx", "ty", "tz", "rx", "ry", "rz"), (float(v) for v in self.params)))


class MotionCorrector:
    """Registers each volume of a run to one reference volume; keeps its state between volumes.

    ``reference`` is a :class:`Volume`, a NIfTI path (an image from an earlier run; a 4-D file
    uses ``reference_volume``), or None to take the run's volume whose ``index`` equals
    ``reference_index`` (the first by default). Volumes that arrive before that one are passed
    through unregistered.

    ``fwhm_mm`` / ``refine_fwhm_mm``: smoothing of the coarse and fine levels (default 2x and 1x
    the largest voxel edge); ``max_points`` / ``refine_points``: reference voxels sampled per level;
    ``max_iterations``, ``tolerance_mm`` (update size: translation mm + rotation as arc on a
    50 mm sphere), ``refine_iterations``: the iteration budget; ``reslice``: "linear", "cubic"
    or None (no resliced volume); ``fit_gain``: fit a global intensity scale alongside.
    A volume that cannot be registered raises :class:`MotionError` and leaves the warm start as
    it was, so the next volume is unaffected.
    """

    def __init__(
        self,
        reference: Volume | str | Path | None = None,
        *,
        reference_index: int = 0,
        reference_volume: int = 0,
        fwhm_mm: float | None = None,
        refine_fwhm_mm: float | None = None,
        max_points: int = 15_000,
        max_iterations: int = 15,
        refine_iterations: int = 1,
        refine_points: int = 15_000,
        tolerance_mm: float = 1e-3,
        reslice: str | None = "linear",
        fit_gain: bool = True,
    ) -> None:
        if reslice is not None and reslice not in RESLICE_ORDERS:
            raise ValueError(f"reslice must be one of {sorted(RESLICE_ORDERS)} or None, got {reslice!r}")
        if max_points < 100:
            raise ValueError(f"max_points must be at least 100, got {max_points}")
        self.reference_index = int(reference_index)
        self.fwhm_mm = fwhm_mm
        self.refine_fwhm_mm = refine_fwhm_mm
        self.max_points = int(max_points)
        self.max_iterations = int(max_iterations)
        self.refine_iterations = int(refine_iterations)
        self.refine_points = int(refine_points)
        self.tolerance_mm = float(tolerance_mm)
        self.reslice = reslice
        self.fit_gain = fit_gain
        self._ref: Volume | None = None
        self._T = np.eye(4)
        if reference is not None:
            if not isinstance(reference, Volume):
                reference = load_volume(reference, index=reference_volume)
            self.set_reference(reference)

    # -- reference -------------------------------------------------------------------------
    @property
    def has_reference(self) -> bool:
        return self._ref is not None

    @property
    def centre(self) -> np.ndarray:
        """World centre (mm) of the rotations: the reference grid's centre."""
        if self._ref is None:
            raise RuntimeError("no reference volume yet")
        return self._c

    @property
    def last_matrix(self) -> np.ndarray:
        """The last converged estimate (the next volume's starting point)."""
        return self._T.copy()

    @property
    def reference_affine(self) -> np.ndarray:
        if self._ref is None:
            raise RuntimeError("no reference volume yet")
        return self._ref_affine

    def set_reference(self, volume: Volume) -> None:
        """Precompute everything that depends only on the reference (done once)."""
        ref = volume.scaled(np.float32)
        aff = np.asarray(volume.affine, dtype=np.float64)
        if min(ref.shape) < 2:
            raise ValueError(f"reference volume {volume.run}#{volume.index} is too small to register: {ref.shape}")
        vox = float(voxel_sizes(aff).max())
        self._fwhm = float(self.fwhm_mm if self.fwhm_mm is not None else 2.0 * vox)
        self._refine_fwhm = float(self.refine_fwhm_mm if self.refine_fwhm_mm is not None else 1.0 * vox)
        self._ref = volume
        self._ref_affine = aff
        self._ref_shape = ref.shape
        self._c = grid_centre(aff, ref.shape)
        self._T = np.eye(4)

        s = smooth(ref, aff, self._fwhm)
        ijk = _sample_points(s, self.max_points)
        x_world = ijk @ aff[:3, :3].T + aff[:3, 3]
        self._coarse = _Level.build(s, aff, ijk, x_world, self._c)
        fine = s if self._refine_fwhm == self._fwhm else smooth(ref, aff, self._refine_fwhm)
        every = max(1, int(np.ceil(len(ijk) / self.refine_points)))  # cubic sampling costs more per point
        self._fine = _Level.build(fine, aff, ijk[::every], x_world[::every], self._c)

    # -- per volume ------------------------------------------------------------------------
    def process(self, volume: Volume) -> MotionResult:
        """Register ``volume`` (warm-started from the previous one) and reslice it if asked."""
        if self._ref is None:
            if volume.index < self.reference_index:
                return self._unregistered(volume)
            self.set_reference(volume)
        data = volume.scaled(np.float32)
        T, iterations, converged = self.estimate(data, volume.affine)
        resliced = self.apply(data, volume.affine, T) if self.reslice else None
        return MotionResult(
            params=matrix_to_params(T, self._c),
            matrix=T,
            resliced=resliced,
            affine=self._ref_affine,
            iterations=iterations,
            converged=converged,
        )

    __call__ = process

    def estimate(self, data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, int, bool]:
        """Gauss-Newton from the previous estimate; returns (4x4 transform, iterations, converged).

        Iterations sample the smoothed volume trilinearly (cheap) until the update is below the
        tolerance; then up to ``refine_iterations`` sample it with cubic B-splines, which removes
        the small bias trilinear interpolation leaves at sub-voxel offsets.
        """
        affine = np.asarray(affine, dtype=np.float64)
        s = smooth(data, affine, self._fwhm)
        to_vox = np.linalg.inv(affine)
        T = self._T.copy()
        converged = False
        total = 0
        for _ in range(self.max_iterations):
            total += 1
            T, step = self._gauss_newton_step(self._coarse, s, to_vox, T, 1)
            if step < self.tolerance_mm * COARSE_TOLERANCE_FACTOR:
                converged = True
                break
        if self.refine_iterations > 0:
            fine = s if self._refine_fwhm == self._fwhm else smooth(data, affine, self._refine_fwhm)
            coeffs = ndimage.spline_filter(fine, order=3, output=np.float32, mode="nearest")
            for _ in range(self.refine_iterations):
                total += 1
                T, step = self._gauss_newton_step(self._fine, coeffs, to_vox, T, 3)
                if step < self.tolerance_mm:
                    break
        if converged:
            self._T = T  # warm start for the next volume; a volume that did not converge is not one
        return T, total, converged

    def _gauss_newton_step(
        self, level: _Level, src: np.ndarray, to_vox: np.ndarray, T: np.ndarray, order: int
    ) -> tuple[np.ndarray, float]:
        M = to_vox @ T
        coords = np.einsum("ij,jn->in", M[:3, :3], level.x) + M[:3, 3:4]  # einsum: no BLAS threads
        w = ndimage.map_coordinates(src, coords, order=order, mode="constant", cval=np.nan, prefilter=False,
                                    output=np.float32)
        invalid = np.isnan(w)
        r = level.r
        H = level.H
        n_out = int(np.count_nonzero(invalid))
        if n_out:
            # points that left the field of view drop out: zero residual, Hessian without them
            if n_out > 0.8 * w.size:
                raise MotionError(
                    f"only {w.size - n_out} of {w.size} reference points fall inside the volume: "
                    "the head moved out of the field of view, or the reference does not match this run"
                )
            Jo = level.JT[:, invalid]
            H = H - np.einsum("in,jn->ij", Jo, Jo)
            w[invalid] = r[invalid]
        w = w.astype(np.float64)
        if self.fit_gain:
            inside = ~invalid if n_out else slice(None)
            gain = float(np.einsum("n,n->", w[inside], r[inside])) / level.rr(inside)
            if not gain > 0.05:
                raise MotionError("the volume has almost no signal where the reference shows the head (gain "
                                  f"{gain:.3g})")
            w = w / gain
            if n_out:
                w[invalid] = r[invalid]
        try:
            dp = np.linalg.solve(H, np.einsum("in,n->i", level.JT, w - r))
        except np.linalg.LinAlgError:
            raise MotionError("the volume overlaps the reference too little to determine all six parameters") from None
        if not np.all(np.isfinite(dp)):
            raise MotionError("registration diverged (non-finite update): is this volume empty or corrupt?")
        D = params_to_matrix(np.concatenate([dp[:3], np.rad2deg(dp[3:])]), self._c)
        step = float(np.linalg.norm(dp[:3]) + FD_RADIUS_MM * np.linalg.norm(dp[3:]))
        return T @ np.linalg.inv(D), step

    def apply(self, data: np.ndarray, affine: np.ndarray, T: np.ndarray, order: str | None = None) -> np.ndarray:
        """Reslice ``data`` (on ``affine``'s grid) onto the reference grid, undoing motion ``T``."""
        order_name = order or self.reslice or "linear"
        if order_name not in RESLICE_ORDERS:
            raise ValueError(f"reslice must be one of {sorted(RESLICE_ORDERS)}, got {order_name!r}")
        n = RESLICE_ORDERS[order_name]
        M = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ T @ self._ref_affine
        src = np.asarray(data, dtype=np.float32)
        if n > 1:
            src = ndimage.spline_filter(src, order=n, output=np.float32, mode="nearest")
        # Where the head moved out of the field of view (the edge slices of a slab, usually by a
        # fraction of a voxel) the nearest acquired value is used: zeros there would make every
        # small movement look like a large intensity change at the slab's edges.
        return ndimage.affine_transform(
            src, M, output_shape=self._ref_shape, order=n, mode="nearest", prefilter=False, output=np.float32
        )

    def _unregistered(self, volume: Volume) -> MotionResult:
        return MotionResult(
            params=np.zeros(6),
            matrix=np.eye(4),
            resliced=volume.scaled(np.float32) if self.reslice else None,
            affine=np.asarray(volume.affine, dtype=np.float64),
            iterations=0,
            converged=False,
            registered=False,
        )


@dataclass
class _Level:
    """What one smoothing level of the reference contributes: Jacobian, Hessian, intensities."""

    JT: np.ndarray  # (6, N): d(reference)/d(tx, ty, tz, rx, ry, rz) at the sample points
    H: np.ndarray  # (6, 6) Gauss-Newton Hessian J'J, constant (inverse compositional)
    r: np.ndarray  # (N,) smoothed reference at the sample points
    x: np.ndarray  # (3, N) world coordinates (mm) of the sample points

    @classmethod
    def build(cls, smoothed: np.ndarray, affine: np.ndarray, ijk: np.ndarray, x: np.ndarray, c: np.ndarray) -> _Level:
        d = x - c
        grads = np.stack([g[tuple(ijk.T)] for g in np.gradient(smoothed)], axis=1).astype(np.float64)
        g_world = grads @ np.linalg.inv(affine[:3, :3])  # dR/dx = A^-T dR/dijk, row-wise
        # columns: translations (mm) then rotations (radians) of the small update D about the centre
        J = np.concatenate([g_world, np.cross(d, g_world)], axis=1)
        H = J.T @ J
        if np.linalg.cond(H) > 1e12:
            raise ValueError("the reference volume has too little structure to register (flat image?)")
        r = smoothed[tuple(ijk.T)].astype(np.float64)
        return cls(np.ascontiguousarray(J.T), H, r, np.ascontiguousarray(x.T))

    def rr(self, inside: np.ndarray | slice) -> float:
        r = self.r[inside]
        return float(np.einsum("n,n->", r, r))


class MotionError(RtcontrolError, RuntimeError):
    """A volume could not be registered to the reference (said why)."""


def _sample_points(smoothed: np.ndarray, max_points: int) -> np.ndarray:
    """Voxel indices (N, 3) of the head in the smoothed reference, at most ``max_points``.

    The head is where the smoothed intensity exceeds a tenth of its 99th percentile (this keeps
    the edge, where most of the registration signal is); the outermost voxel layer is dropped
    because its gradient is one-sided. A fixed-seed subset keeps the cost bounded and the result
    reproducible.
    """
    hi = float(np.percentile(smoothed, 99))
    mask = smoothed > 0.1 * hi
    for axis, n in enumerate(mask.shape):
        if n > 2:
            edge: list[slice | list[int]] = [slice(None)] * 3
            edge[axis] = [0, n - 1]
            mask[tuple(edge)] = False
    ijk = np.argwhere(mask)
    if len(ijk) < 100:
        raise ValueError("the reference volume has almost no signal above background to register to")
    if len(ijk) > max_points:
        pick = np.sort(np.random.default_rng(0).choice(len(ijk), size=max_points, replace=False))
        ijk = ijk[pick]
    return ijk
