"""A synthetic fMRI run with known ground truth, written as Siemens mosaic DICOM.

The run is built so that every effect is known exactly and recorded in ``truth.json``:

* a smooth brain-like phantom (head, skull, grey and white matter, ventricles) on an oblique grid;
* a block-design activation: inside a box (voxel and world coordinates of the *reference* head) the
  signal is multiplied by ``1 + amplitude% * boxcar(t)``; the box moves with the head;
* a slow multiplicative drift;
* rigid head motion in the convention of :mod:`rtcontrol.rigid` (parameters per volume, volume 0 is the
  reference), applied by resampling the phantom through ``params_to_matrix`` about ``grid_centre`` with
  cubic splines (the phantom is smooth, so the resampling error is far below the noise);
* Gaussian noise, then rounding to uint16 (what the files hold is exactly ``SynthRun.data``).

``generate(spec)`` builds it in memory; ``write_run(spec, out_dir)`` also writes the DICOM files and
``truth.json``; ``main.py synth OUT_DIR`` is the command-line front end.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from rtcontrol.rigid import grid_centre, params_to_matrix, rotation_matrix
from rtcontrol.scanner.mosaic_writer import MosaicSeries, MosaicWriter
from rtcontrol.scanner.volume import Volume


@dataclass
class SynthSpec:
    """What to simulate. Every field has a sensible default (64x64x36, TR 2 s, 8 degrees oblique)."""

    volumes: int = 60
    tr: float = 2.0
    shape: tuple[int, int, int] = (64, 64, 36)
    voxel_mm: tuple[float, float, float] = (3.0, 3.0, 3.5)
    oblique_deg: float = 8.0  # tilt of the slices about the R axis (transversal towards coronal)
    motion_mm: float = 1.0  # peak translation (mm); rotations peak at 0.6 * motion_mm degrees
    noise_pct: float = 1.0  # noise SD as percent of the mean brain signal
    activation_pct: float = 3.0  # percent signal change inside the box during "on" blocks
    drift_pct: float = 2.0  # linear drift over the run, percent
    block_volumes: int = 10  # volumes per "off" and per "on" block; the run starts "off"
    box_voxels: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None  # [lo, hi) per axis
    seed: int = 0
    series_number: int = 7
    dtype: str = "uint16"  # "uint16" (Siemens) or "int16"
    description: str = "rtcontrol_synth_bold"

    def __post_init__(self) -> None:
        self.shape = tuple(int(n) for n in self.shape)  # type: ignore[assignment]
        self.voxel_mm = tuple(float(v) for v in self.voxel_mm)  # type: ignore[assignment]
        if len(self.shape) != 3 or min(self.shape) < 4:
            raise ValueError(f"shape must be three sizes of at least 4, got {self.shape}")
        if self.volumes < 1 or self.tr <= 0:
            raise ValueError("need at least one volume and a positive TR")
        if self.dtype not in ("uint16", "int16"):
            raise ValueError(f"dtype must be uint16 or int16, got {self.dtype}")


@dataclass
class SynthRun:
    """A generated run: ``data[i, j, k, t]`` exactly as written to the files, plus the truth."""

    spec: SynthSpec
    data: np.ndarray  # (X, Y, Z, T) uint16/int16
    affine: np.ndarray  # (i, j, k) -> RAS+ mm
    slice_times: tuple[float, ...]
    truth: dict = field(default_factory=dict)

    def volume(self, t: int) -> np.ndarray:
        return self.data[..., t]

    def to_volume(self, t: int, run: str | None = None) -> Volume:
        """Volume ``t`` as an rtcontrol :class:`Volume` (as the reader would build it)."""
        return Volume(
            data=np.ascontiguousarray(self.data[..., t]),
            affine=self.affine.copy(),
            run=run or f"series-{self.spec.series_number:03d}",
            index=t,
            tr=self.spec.tr,
            slice_timing=self.slice_times,
            header={"SourceFormat": "synthetic", "RepetitionTime": self.spec.tr * 1000.0},
        )


def synth_affine(spec: SynthSpec) -> np.ndarray:
    """An oblique grid in the native DICOM layout (i -> left, j -> posterior, k -> superior), centred near the
    origin."""
    base = np.diag([-spec.voxel_mm[0], -spec.voxel_mm[1], spec.voxel_mm[2]])
    rot = rotation_matrix(spec.oblique_deg, 0.0, 0.0)
    A = np.eye(4)
    A[:3, :3] = rot @ base
    centre_ijk = (np.asarray(spec.shape, float) - 1) / 2
    A[:3, 3] = np.array([0.0, -10.0, 12.0]) - A[:3, :3] @ centre_ijk
    return A


def _soft_ellipsoid(p: np.ndarray, centre, semi, edge_mm: float = 2.0) -> np.ndarray:
    """~1 inside, ~0 outside an ellipsoid, with a smooth (logistic) edge of about ``edge_mm``."""
    q = (p - np.asarray(centre, float)) / np.asarray(semi, float)
    r = np.sqrt((q**2).sum(axis=-1))
    scale = float(np.mean(semi))
    return 1.0 / (1.0 + np.exp(np.clip((r - 1.0) * scale / edge_mm, -50, 50)))


def _head_scale(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Per-axis shrink factor so the head fills at most 70% of the grid's extent (grid axes ~ R/L, A/P, S/I)."""
    extent = np.linalg.norm(affine[:3, :3], axis=0) * np.asarray(shape, float)
    return np.minimum(1.0, 0.7 * extent / 2 / np.array([70.0, 88.0, 56.0]))


def phantom(affine: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A smooth EPI-like head in world space sampled on the grid; returns (image, brain mask).

    An adult head (about 140 x 176 x 112 mm) shrunk where needed to fill at most 70% of the field of view
    along each axis, so that it stays inside the grid when it moves.
    """
    ijk = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"), axis=-1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    s = _head_scale(affine, shape)
    p = (world - grid_centre(affine, shape)) / s  # in the coordinates of the full-size head
    scalp = _soft_ellipsoid(p, (0, 0, 0), (70, 88, 56))
    skull = _soft_ellipsoid(p, (0, 0, 0), (65, 83, 51))
    brain = _soft_ellipsoid(p, (0, 0, 0), (61, 79, 47))
    white = _soft_ellipsoid(p, (0, 0, 3), (45, 62, 33), edge_mm=3.0)
    vents = _soft_ellipsoid(p, (9, 2, 6), (5, 18, 9)) + _soft_ellipsoid(p, (-9, 2, 6), (5, 18, 9))
    folds = 1.0 + 0.06 * np.sin(p[..., 0] / 7.0) * np.sin(p[..., 1] / 9.0) * np.cos(p[..., 2] / 8.0)
    img = 350.0 * (scalp - skull) + brain * (900.0 * folds - 180.0 * white) + 600.0 * vents
    img = ndimage.gaussian_filter(img, 0.7)  # band-limit what is left of the edges
    return img, brain > 0.5


def default_box(affine: np.ndarray, shape: tuple[int, int, int]) -> tuple[tuple[int, int], ...]:
    """A box of about 6x6x4 voxels in right occipito-parietal cortex of the phantom."""
    s = _head_scale(affine, shape)
    target = grid_centre(affine, shape) + np.array([25.0, -40.0, 10.0]) * s
    ijk = np.linalg.solve(affine[:3, :3], target - affine[:3, 3])
    sizes = [min(n, max(2, m // 8)) for n, m in zip((6, 6, 4), (shape[0] * 6 // 8 + 16, shape[1] * 6 // 8 + 16, 32))]
    out = []
    for axis, (v, n) in enumerate(zip(ijk, sizes)):
        lo = int(np.clip(round(v - n / 2), 0, shape[axis] - n))
        out.append((lo, lo + n))
    return tuple(out)


def motion_params(spec: SynthSpec, rng: np.random.Generator) -> np.ndarray:
    """Smooth random head motion (T, 6): volume 0 is the reference (all zeros)."""
    T = spec.volumes
    if T == 1 or spec.motion_mm == 0:
        return np.zeros((T, 6))
    walk = np.cumsum(rng.standard_normal((T, 6)), axis=0)
    walk = ndimage.gaussian_filter1d(walk, sigma=max(1.0, T / 30), axis=0, mode="nearest")
    walk -= walk[0]
    peak = np.abs(walk).max(axis=0)
    peak[peak == 0] = 1.0
    scale = np.array([1, 1, 1, 0.6, 0.6, 0.6]) * spec.motion_mm
    return walk / peak * scale * rng.uniform(0.5, 1.0, 6)


def block_design(spec: SynthSpec) -> tuple[np.ndarray, list[int], list[int]]:
    """Boxcar per volume (0/1), onsets and durations in volumes: off, on, off, on..."""
    n = spec.block_volumes
    box = ((np.arange(spec.volumes) // n) % 2 == 1).astype(float)
    onsets = [t for t in range(spec.volumes) if box[t] and (t == 0 or not box[t - 1])]
    durations = [int(min(n, spec.volumes - t)) for t in onsets]
    return box, onsets, durations


def slice_times(n: int, tr: float) -> tuple[float, ...]:
    """Siemens interleaved ascending: odd slice counts start at 0, even ones at 1."""
    order = list(range(0, n, 2)) + list(range(1, n, 2)) if n % 2 else list(range(1, n, 2)) + list(range(0, n, 2))
    times = np.empty(n)
    times[order] = np.arange(n) * tr / n
    return tuple(float(round(t, 6)) for t in times)


def generate(spec: SynthSpec) -> SynthRun:
    """Build the run in memory; deterministic for a given ``spec`` (including its seed)."""
    rng = np.random.default_rng(spec.seed)
    affine = synth_affine(spec)
    shape = spec.shape
    image, brain = phantom(affine, shape)
    box = spec.box_voxels or default_box(affine, shape)
    box_mask = np.zeros(shape)
    box_mask[tuple(slice(lo, hi) for lo, hi in box)] = 1.0
    coeffs = ndimage.spline_filter(image, order=3, mode="constant")

    params = motion_params(spec, rng)
    boxcar, onsets, durations = block_design(spec)
    activation = spec.activation_pct / 100.0 * boxcar
    drift = 1.0 + spec.drift_pct / 100.0 * np.arange(spec.volumes) / max(1, spec.volumes - 1)
    noise_sd = spec.noise_pct / 100.0 * float(image[brain].mean())
    centre = grid_centre(affine, shape)
    inv_affine = np.linalg.inv(affine)
    dtype = np.dtype(spec.dtype)
    hi = np.iinfo(dtype).max

    data = np.empty((*shape, spec.volumes), dtype=dtype)
    for t in range(spec.volumes):
        # voxel v of the moved image shows the reference head at world M^-1 (A v): pull-back in voxels
        pull = inv_affine @ np.linalg.inv(params_to_matrix(params[t], centre)) @ affine
        moved = ndimage.affine_transform(coeffs, pull[:3, :3], pull[:3, 3], order=3, mode="constant", prefilter=False)
        moved_box = ndimage.affine_transform(box_mask, pull[:3, :3], pull[:3, 3], order=1, mode="constant")
        vol = moved * (1.0 + activation[t] * moved_box) * drift[t]
        vol += rng.normal(0.0, noise_sd, shape) if noise_sd > 0 else 0.0
        data[..., t] = np.clip(np.rint(vol), 0, hi).astype(dtype)

    st = slice_times(shape[2], spec.tr)
    corners = np.array([[i, j, k] for i in box[0] for j in box[1] for k in box[2]], float) - 0.5
    corners = np.clip(corners, -0.5, None)
    box_lo_hi_centre = np.array([(lo + hi - 1) / 2 for lo, hi in box])
    truth = {
        "format": "rtcontrol synth truth v1",
        "spec": _jsonable(asdict(spec)),
        "tr": spec.tr,
        "shape": list(shape),
        "volumes": spec.volumes,
        "affine": affine.tolist(),
        "slice_timing": list(st),
        "series_number": spec.series_number,
        "motion": {
            "convention": "rtcontrol.rigid: (tx, ty, tz) mm along R, A, S; (rx, ry, rz) degrees about R, A, S; "
            "moved_world = R (ref_world - centre) + centre + t; volume 0 is the reference",
            "centre": centre.tolist(),
            "params": params.tolist(),
        },
        "activation": {
            "amplitude_pct": spec.activation_pct,
            "box_voxels": [list(b) for b in box],
            "box_voxels_note": "half-open [lo, hi) per axis (i, j, k) in the reference (volume 0) grid; "
            "the box moves with the head",
            "box_world_centre": (affine[:3, :3] @ box_lo_hi_centre + affine[:3, 3]).tolist(),
            "box_world_corners": (corners @ affine[:3, :3].T + affine[:3, 3]).tolist(),
            "onsets_volumes": onsets,
            "durations_volumes": durations,
            "onsets_s": [o * spec.tr for o in onsets],
            "durations_s": [d * spec.tr for d in durations],
            "timecourse": activation.tolist(),
        },
        "drift": drift.tolist(),
        "noise_sd": noise_sd,
        "brain_mean": float(image[brain].mean()),
    }
    return SynthRun(spec=spec, data=data, affine=affine, slice_times=st, truth=truth)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def mosaic_series(run: SynthRun) -> MosaicSeries:
    """The DICOM series facts of a generated run (UIDs derived from the seed, so files are reproducible)."""
    from pydicom.uid import generate_uid

    spec = run.spec
    root = f"synth-{spec.seed}-{spec.series_number}-{spec.shape}-{spec.volumes}"
    return MosaicSeries(
        affine=run.affine,
        shape=spec.shape,
        tr=spec.tr,
        slice_times=run.slice_times,
        series_number=spec.series_number,
        description=spec.description,
        series_uid=generate_uid(entropy_srcs=[root, "series"]),
        study_uid=generate_uid(entropy_srcs=[root, "study"]),
        frame_uid=generate_uid(entropy_srcs=[root, "frame"]),
    )


def write_run(spec: SynthSpec, out_dir: Path | str, run: SynthRun | None = None) -> Path:
    """Write the run as one mosaic DICOM file per volume plus ``truth.json``; returns ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = run or generate(spec)
    writer = MosaicWriter(mosaic_series(run))
    files = [writer.write(run.volume(t), t, out).name for t in range(spec.volumes)]
    truth = dict(run.truth, files=files, series_uid=writer.series.series_uid)
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return out


# ---- command line ---------------------------------------------------------------------------------


def _shape(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(p) for p in text.lower().replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must look like 64,64,36, got {text!r}") from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"shape needs three sizes, got {text!r}")
    return parts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = SynthSpec()
    parser.add_argument("out_dir", type=Path, help="folder to write the DICOM files and truth.json into")
    parser.add_argument("--volumes", type=int, default=d.volumes, help=f"number of volumes (default {d.volumes})")
    parser.add_argument("--tr", type=float, default=d.tr, help=f"repetition time in seconds (default {d.tr})")
    parser.add_argument("--shape", type=_shape, default=d.shape, help="X,Y,Z voxels (default 64,64,36)")
    parser.add_argument("--motion", type=float, default=d.motion_mm, help="peak head motion in mm (default 1)")
    parser.add_argument("--noise", type=float, default=d.noise_pct, help="noise SD, percent of brain mean")
    parser.add_argument("--activation", type=float, default=d.activation_pct, help="percent signal change")
    parser.add_argument("--drift", type=float, default=d.drift_pct, help="linear drift over the run, percent")
    parser.add_argument("--block", type=int, default=d.block_volumes, help="volumes per off/on block")
    parser.add_argument("--oblique", type=float, default=d.oblique_deg, help="slice tilt in degrees")
    parser.add_argument("--series-number", type=int, default=d.series_number)
    parser.add_argument("--int16", action="store_true", help="write signed int16 instead of uint16")
    parser.add_argument("--seed", type=int, default=d.seed)


def run(args: argparse.Namespace) -> int:
    try:
        spec = SynthSpec(
            volumes=args.volumes, tr=args.tr, shape=args.shape, motion_mm=args.motion, noise_pct=args.noise,
            activation_pct=args.activation, drift_pct=args.drift, block_volumes=args.block,
            oblique_deg=args.oblique, series_number=args.series_number, seed=args.seed,
            dtype="int16" if args.int16 else "uint16",
        )  # fmt: skip
    except ValueError as exc:
        print(f"synth: {exc}", file=sys.stderr)
        return 2
    out = write_run(spec, args.out_dir)
    print(f"wrote {spec.volumes} volumes ({'x'.join(map(str, spec.shape))}, TR {spec.tr} s) and truth.json to {out}")
    return 0
