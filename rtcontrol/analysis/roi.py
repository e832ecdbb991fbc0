"""Regions of interest on the run's grid, and percent signal change against a baseline window.

An ROI is described once (:class:`RoiSpec`: a box in voxel indices, a box in world millimetres,
or a NIfTI mask in any space) and placed on the run's grid when the first volume shows that
grid (:meth:`RoiSpec.on_grid`): a mask file is resampled through both affines exactly once, so
the per-volume cost is a gather of the ROI's voxels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from rtcontrol.analysis.drift import DriftBasis
from rtcontrol.analysis.glm import RunningModel


@dataclass
class Roi:
    """Voxels (flat indices into the grid, C order) and their weights (1, or partial volume)."""

    name: str
    shape: tuple[int, int, int]
    affine: np.ndarray
    index: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        if self.index.size == 0:
            raise ValueError(f"ROI {self.name!r} has no voxels on this {self.shape} grid")
        self._wsum = float(self.weights.sum())

    @property
    def n_voxels(self) -> int:
        return int(self.index.size)

    @property
    def mask(self) -> np.ndarray:
        m = np.zeros(int(np.prod(self.shape)), dtype=bool)
        m[self.index] = True
        return m.reshape(self.shape)

    def values(self, data: np.ndarray) -> np.ndarray:
        self._check(data)
        return np.asarray(data).reshape(-1)[self.index]

    def mean(self, data: np.ndarray) -> float:
        """Weighted mean of ``data`` (on this ROI's grid) over the ROI."""
        return float(np.einsum("n,n->", self.values(data).astype(np.float64), self.weights) / self._wsum)

    def _check(self, data: np.ndarray) -> None:
        if tuple(data.shape) != tuple(self.shape):
            raise ValueError(f"ROI {self.name!r} was placed on a {self.shape} grid, the volume is {tuple(data.shape)}")


@dataclass(frozen=True)
class RoiSpec:
    """How to find an ROI on a grid that is not known yet.

    ``kind`` is ``"box_voxel"`` (inclusive index corners ``lo``, ``hi``), ``"box_world"``
    (RAS+ mm corners; voxels whose centres lie inside) or ``"mask"`` (a NIfTI ``path``; voxels
    equal to ``label`` if given, else non-zero; resampled with ``interpolation`` "nearest" or
    "linear", the latter giving partial-volume weights, voxels under ``threshold`` dropped).
    """

    kind: str
    lo: tuple[float, float, float] | None = None
    hi: tuple[float, float, float] | None = None
    path: str | None = None
    label: int | None = None
    interpolation: str = "nearest"
    threshold: float = 0.5
    name: str = "roi"

    def __post_init__(self) -> None:
        if self.kind not in ("box_voxel", "box_world", "mask"):
            raise ValueError(f"ROI kind must be box_voxel, box_world or mask, got {self.kind!r}")
        if self.kind == "mask" and not self.path:
            raise ValueError("a mask ROI needs the path of a NIfTI mask")
        if self.kind != "mask" and (self.lo is None or self.hi is None):
            raise ValueError(f"a {self.kind} ROI needs two corners (lo and hi)")
        if self.interpolation not in ("nearest", "linear"):
            raise ValueError(f"mask interpolation must be nearest or linear, got {self.interpolation!r}")

    @classmethod
    def box_voxel(cls, lo: Sequence[float], hi: Sequence[float], name: str = "roi") -> RoiSpec:
        return cls("box_voxel", lo=_vec3(lo), hi=_vec3(hi), name=name)

    @classmethod
    def box_world(cls, lo: Sequence[float], hi: Sequence[float], name: str = "roi") -> RoiSpec:
        return cls("box_world", lo=_vec3(lo), hi=_vec3(hi), name=name)

    @classmethod
    def mask(cls, path: str | Path, *, label: int | None = None, interpolation: str = "nearest",
             threshold: float = 0.5, name: str = "roi") -> RoiSpec:
        return cls("mask", path=str(path), label=label, interpolation=interpolation, threshold=threshold, name=name)

    def on_grid(self, shape: Sequence[int], affine: np.ndarray) -> Roi:
        """Place the ROI on a grid (done once per run)."""
        shape3 = (int(shape[0]), int(shape[1]), int(shape[2]))
        affine = np.asarray(affine, dtype=np.float64)
        if self.kind == "box_voxel":
            lo, hi = self._box()
            ijk = np.indices(shape3).reshape(3, -1).T
            inside = np.all((ijk >= lo) & (ijk <= hi), axis=1)
            where = f"voxel box {list(lo)}..{list(hi)} (grid is {list(shape3)})"
            weights = np.ones(int(inside.sum()))
        elif self.kind == "box_world":
            lo, hi = self._box()
            ijk = np.indices(shape3).reshape(3, -1).T.astype(np.float64)
            xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
            inside = np.all((xyz >= lo) & (xyz <= hi), axis=1)
            corners = np.array([[0, 0, 0], np.asarray(shape3) - 1]) @ affine[:3, :3].T + affine[:3, 3]
            where = f"world box {list(lo)}..{list(hi)} mm (grid corners {corners.round(1).tolist()} mm)"
            weights = np.ones(int(inside.sum()))
        else:
            frac = self._resampled_mask(shape3, affine)
            linear = self.interpolation == "linear"
            inside = (frac >= self.threshold).reshape(-1) if linear else (frac > 0.5).reshape(-1)
            where = f"mask {self.path}"
            weights = frac.reshape(-1)[inside] if self.interpolation == "linear" else np.ones(int(inside.sum()))
        index = np.flatnonzero(inside)
        if index.size == 0:
            raise ValueError(f"ROI {self.name!r} is empty on the run's grid: {where}")
        return Roi(self.name, shape3, affine, index, weights.astype(np.float64))

    def _box(self) -> tuple[np.ndarray, np.ndarray]:
        """The box's corners, low to high (``__post_init__`` checked a box has both)."""
        if self.lo is None or self.hi is None:
            raise ValueError(f"a {self.kind} ROI needs two corners (lo and hi)")
        return np.minimum(self.lo, self.hi), np.maximum(self.lo, self.hi)

    def _resampled_mask(self, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
        import nibabel as nib
        from nibabel.spatialimages import SpatialImage

        path = Path(self.path or "")
        if not path.is_file():
            raise FileNotFoundError(f"ROI mask {path} does not exist")
        try:
            img = nib.load(str(path))
        except Exception as exc:
            raise ValueError(f"ROI mask {path} is not a readable NIfTI image: {exc}") from None
        if not isinstance(img, SpatialImage):
            raise ValueError(f"ROI mask {path} is not a volume image")
        data = np.asarray(img.dataobj)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise ValueError(f"ROI mask {path} must be a 3-D image, it has shape {data.shape}")
        binary = (data == self.label) if self.label is not None else (data != 0)
        if not binary.any():
            what = f"label {self.label}" if self.label is not None else "non-zero voxels"
            raise ValueError(f"ROI mask {path} has no {what}")
        # run voxel -> world -> mask voxel, once
        M = np.linalg.inv(img.affine) @ affine
        order = 1 if self.interpolation == "linear" else 0
        return ndimage.affine_transform(binary.astype(np.float32), M, output_shape=shape, order=order,
                                        mode="constant", cval=0.0, output=np.float32)


def _vec3(v: Sequence[float]) -> tuple[float, float, float]:
    t = tuple(float(x) for x in v)
    if len(t) != 3:
        raise ValueError(f"a corner needs three coordinates, got {list(v)}")
    return t


class PercentSignalChange:
    """Percent signal change of one signal against a baseline window, with running detrending.

    The signal goes through a :class:`RunningModel` (constant + drift + motion, optionally task
    regressors). The value at volume ``t`` is::

        100 * (y[t] - mean_w(y) - (x[t] - mean_w(x)) . b) / mean_w(y)

    where ``w`` is the baseline window ``[baseline_start, baseline_start + baseline_length)``,
    ``x`` the drift and motion regressors and ``b`` their *current* coefficients: the change
    since the baseline minus the change the drift and motion account for. The window's sums are
    kept, so re-estimating ``b`` each volume costs nothing extra. Until the model has
    ``min_volumes`` volumes (default: twice its regressors) ``b`` is not trusted and taken as 0.
    Before the window is complete the value is NaN.
    """

    def __init__(
        self,
        baseline_start: int = 0,
        baseline_length: int = 10,
        drift: DriftBasis | None = None,
        motion: bool = True,
        n_task: int = 0,
        min_volumes: int | None = None,
    ) -> None:
        if baseline_length < 1:
            raise ValueError(f"the baseline window needs at least one volume, got {baseline_length}")
        self.start, self.length = int(baseline_start), int(baseline_length)
        self.model = RunningModel(1, drift=drift, motion=motion, n_task=n_task)
        self.min_volumes = 2 * self.model.p if min_volumes is None else int(min_volumes)
        self._sum_y = 0.0
        self._sum_x = np.zeros(self.model.p)
        self._n_base = 0

    @property
    def baseline(self) -> float:
        """Mean raw signal over the baseline window (NaN until it is complete)."""
        return self._sum_y / self._n_base if self._n_base >= self.length else float("nan")

    def update(self, t: int, value: float, motion: np.ndarray | None = None, task: np.ndarray | None = None) -> float:
        """Add volume ``t`` (0-based) with its ROI value; return its percent signal change."""
        x = self.model.row(t, motion, task)
        self.model.glm.add(x, np.array([value]))
        if self.start <= t < self.start + self.length:
            self._sum_y += float(value)
            self._sum_x += x
            self._n_base += 1
        if self._n_base < self.length:
            return float("nan")
        base = self._sum_y / self._n_base
        if not base > 0:
            raise ValueError(f"the baseline signal is {base:.4g}; percent change needs a positive baseline (is the ROI "
                             "outside the head?)")
        change = float(value) - base
        if self.model.glm.n >= self.min_volumes:
            change -= float(self.model.nuisance_fit(x - self._sum_x / self._n_base)[0])
        return 100.0 * change / base
