"""A whole-brain searchlight decoder per volume, run in parallel on the worker's Dask cluster.

For every brain voxel, the voxels within ``radius`` (a sphere, about 33 voxels at radius 2) form a
pattern; over the last ``window`` volumes a ridge regression learns to read the block design
(off/on blocks of ``block_volumes``, starting off) from that pattern on the even volumes and
predicts the odd ones, and the other way round. The searchlight's score is the correlation of
those cross-validated predictions with the design: high where the pattern carries the task.

Each volume: motion correction (optional), the window of brain voxels (drift removed, z-scored) is
shared once with the cluster (``ctx.share``), the brain is cut into chunks of centres and
``ctx.map`` scores them in parallel. The region is the connected cluster around the best searchlight
of the voxels scoring at least ``region_fraction`` of it (none unless the best is above
``score_threshold``); the feedback is the percent signal change of
this volume in that region against the window's "off" volumes, mapped from [psc_min, psc_max]
to 0..1. Metrics: the best score, the region's size and centre (voxel i, j, k), the percent change,
the time the searchlight took. The last score map is saved as ``searchlight_score.nii.gz``.

On the synthetic run (``main.py synth``; its activation box is in ``truth.json``) the region found
is the activation box. Real data needs ``lag_volumes`` for the haemodynamic delay (about 4-6 s).
"""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage

from rtcontrol.analysis.steps import MotionStep, Pipeline
from rtcontrol.project import Project, Result, RunContext, Setting
from rtcontrol.scanner.volume import Volume


class Searchlight(Project):
    name = "Searchlight decoder"
    description = (
        "Whole-brain searchlight (ridge decoder of the block design, cross-validated) per volume on the "
        "worker's Dask cluster; feedback from the region it finds."
    )
    settings = [
        Setting("block_volumes", 10, "int", "off/on blocks of this many volumes, starting off", minimum=1),
        Setting("lag_volumes", 0, "int", "haemodynamic delay of the design in volumes (0 for the synthetic run)",
                minimum=0),
        Setting("window", 40, "int", "volumes the decoder learns from (the most recent)", minimum=4),
        Setting("min_volumes", 20, "int", "no searchlight before this many volumes (needs off and on)", minimum=4),
        Setting("radius", 2, "int", "searchlight radius in voxels", minimum=1, maximum=4),
        Setting("ridge", 1.0, "float", "ridge penalty of the decoder", minimum=0.0),
        Setting("score_threshold", 0.5, "float", "no region unless the best searchlight scores above this",
                minimum=-1.0, maximum=1.0),
        Setting("region_fraction", 0.8, "float", "the region: voxels around the best one scoring at least this "
                "fraction of it", minimum=0.0, maximum=1.0),
        Setting("psc_min", -1.0, "float", "percent change shown as 0"),
        Setting("psc_max", 3.0, "float", "percent change shown as 1"),
        Setting("chunks_per_thread", 3, "int", "pieces of work per cluster thread (balances the load)", minimum=1),
        Setting("motion_correction", True, "bool", "register each volume to the first before the searchlight"),
    ]

    def start_run(self, ctx: RunContext) -> None:
        s = ctx.settings
        if not s["psc_max"] > s["psc_min"]:
            raise ValueError(f"psc_max ({s['psc_max']}) must be above psc_min ({s['psc_min']})")
        if s["min_volumes"] > s["window"]:
            raise ValueError(f"min_volumes ({s['min_volumes']}) cannot exceed the window ({s['window']})")
        self.motion = Pipeline([MotionStep(reference_index=0)] if s["motion_correction"] else [])
        self.history: list[np.ndarray] = []  # brain voxels of the recent volumes
        self.indices: list[int] = []
        self.brain: np.ndarray | None = None
        self.neighbours = None  # shared with the cluster once
        self.scores: np.ndarray | None = None
        self.affine: np.ndarray | None = None
        # asking connects now (the worker starts its cluster if need be): the first volume does not wait for it
        ctx.log(f"searchlight: {ctx.parallelism} parallel thread(s)")

    def process(self, volume: Volume, ctx: RunContext) -> Result:
        s = ctx.settings
        frame = self.motion.process(volume)
        metrics = {k: v for k, v in frame.metrics.items() if k in ("fd", "motion_ok")}
        if self.brain is None:
            self.brain = brain_mask(frame.data)
            self.affine = frame.affine
            table = neighbour_table(self.brain, s["radius"])
            self.neighbours = ctx.share(table)
            ctx.log(f"searchlight: {int(self.brain.sum())} brain voxels, spheres of up to {table.shape[1]} voxels")
        self.history.append(frame.data[self.brain].astype(np.float32))
        self.indices.append(volume.index)
        del self.history[: -s["window"]], self.indices[: -s["window"]]
        if len(self.history) < s["min_volumes"]:
            return Result(feedback=None, metrics=metrics)
        design = np.array([block(t - s["lag_volumes"], s["block_volumes"]) for t in self.indices])
        if design.std() == 0:
            return Result(feedback=None, metrics=metrics)  # the window is all off or all on: nothing to learn
        t0 = time.perf_counter()
        window = ctx.share(standardise(np.stack(self.history)))  # this volume's data: sent once, for every chunk
        n = int(self.brain.sum())
        pieces = max(1, ctx.parallelism * s["chunks_per_thread"])
        bounds = np.linspace(0, n, min(n, pieces) + 1).astype(int)
        parts = ctx.map(score_chunk, list(zip(bounds[:-1], bounds[1:])), window, self.neighbours, design, s["ridge"])
        scores = np.zeros(self.brain.shape, np.float32)
        scores[self.brain] = np.concatenate(parts)
        self.scores = scores
        metrics["searchlight_s"] = time.perf_counter() - t0
        metrics["score_max"] = float(scores.max())
        region = find_region(scores, s["score_threshold"], s["region_fraction"])
        metrics["region_voxels"] = float(region.sum())
        if not region.any():
            return Result(feedback=None, metrics=metrics)
        centre = np.argwhere(region).mean(axis=0)
        metrics.update(region_i=float(centre[0]), region_j=float(centre[1]), region_k=float(centre[2]))
        in_region = region[self.brain]
        signal = np.stack(self.history)[:, in_region].mean(axis=1)
        baseline = signal[design == 0].mean()
        psc = float((signal[-1] / baseline - 1.0) * 100.0)
        level = float(np.clip((psc - s["psc_min"]) / (s["psc_max"] - s["psc_min"]), 0.0, 1.0))
        metrics.update(psc=psc, feedback=level)
        return Result(feedback=level, metrics=metrics)

    def end_run(self, ctx: RunContext) -> None:
        if self.scores is not None and ctx.output_dir is not None:
            import nibabel as nib

            path = ctx.output_dir / "searchlight_score.nii.gz"
            nib.save(nib.Nifti1Image(self.scores, self.affine), path)
            ctx.log(f"searchlight: last score map saved as {path.name}")


def block(t: int, n: int) -> float:
    """1 during the 'on' blocks of an off/on design that starts 'off' (0 before the run)."""
    return float(t >= 0 and (t // n) % 2 == 1)


def brain_mask(data: np.ndarray) -> np.ndarray:
    """Voxels brighter than half the mean of the brighter half: the head, without the background."""
    bright = data[data > data.mean()]
    return data > 0.5 * float(bright.mean()) if bright.size else np.zeros(data.shape, bool)


def neighbour_table(mask: np.ndarray, radius: int) -> np.ndarray:
    """(centres, k) indices into the brain voxels of each centre's sphere; ``n`` (a zero column) pads."""
    r = np.arange(-radius, radius + 1)
    offsets = np.array([(a, b, c) for a in r for b in r for c in r if a * a + b * b + c * c <= radius * radius])
    number = np.full(mask.shape, -1, np.int64)
    n = int(mask.sum())
    number[mask] = np.arange(n)
    padded = np.pad(number, radius, constant_values=-1)
    centres = np.argwhere(mask) + radius
    table = np.stack([padded[tuple((centres + o).T)] for o in offsets], axis=1)
    table[table < 0] = n
    return table.astype(np.int32)


def standardise(history: np.ndarray) -> np.ndarray:
    """(volumes, voxels) with a line in time removed and unit variance; plus a zero column (the padding)."""
    t = np.linspace(-1.0, 1.0, history.shape[0])
    basis = np.stack([np.ones_like(t), t], axis=1)
    coef, *_ = np.linalg.lstsq(basis, history, rcond=None)
    resid = history - basis @ coef
    sd = resid.std(axis=0)
    resid /= np.where(sd > 0, sd, 1.0)
    return np.concatenate([resid, np.zeros((history.shape[0], 1))], axis=1).astype(np.float32)


def score_chunk(bounds: tuple[int, int], window: np.ndarray, neighbours: np.ndarray, design: np.ndarray,
                ridge: float, block_size: int = 1024) -> np.ndarray:
    """Cross-validated ridge decoding score of the searchlights centred on brain voxels lo..hi-1."""
    lo, hi = bounds
    return np.concatenate([_scores(window, neighbours[a:min(a + block_size, hi)], design, ridge)
                           for a in range(lo, hi, block_size)] or [np.zeros(0, np.float32)])


def _scores(window: np.ndarray, spheres: np.ndarray, design: np.ndarray, ridge: float) -> np.ndarray:
    X = np.moveaxis(window[:, spheres], 1, 0).astype(np.float64)  # (centres, volumes, k)
    n_vol, k = X.shape[1], X.shape[2]
    even = np.arange(n_vol) % 2 == 0
    predicted = np.zeros((len(spheres), n_vol))
    eye = ridge * np.eye(k)
    for train, test in ((even, ~even), (~even, even)):
        Xtr, ytr = X[:, train], design[train] - design[train].mean()
        XtrT = Xtr.transpose(0, 2, 1)
        weights = np.linalg.solve(XtrT @ Xtr + eye, (XtrT @ ytr)[..., None])[..., 0]  # (centres, k)
        predicted[:, test] = (X[:, test] @ weights[..., None])[..., 0]
    p = predicted - predicted.mean(axis=1, keepdims=True)
    d = design - design.mean()
    denominator = np.sqrt((p * p).sum(axis=1) * (d * d).sum())
    return np.where(denominator > 0, p @ d / np.where(denominator > 0, denominator, 1.0), 0.0).astype(np.float32)


def find_region(scores: np.ndarray, threshold: float, fraction: float) -> np.ndarray:
    """The connected voxels around the best score that reach ``fraction`` of it (empty if it is not above
    ``threshold``): the centre of the effect, not everything the optimistic cross-validation lets through."""
    peak = np.unravel_index(int(np.argmax(scores)), scores.shape)
    best = float(scores[peak])
    if not best > threshold:
        return np.zeros(scores.shape, bool)
    labels, _ = ndimage.label(scores >= max(threshold, fraction * best))
    return labels == labels[peak]
