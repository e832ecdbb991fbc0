"""Per-run numbers the console shows: a Qt-free model the GUI plots and tests inspect.

Everything per volume lives in preallocated numpy arrays that grow by doubling, so a
2,000-volume run costs a few hundred kB and an update is O(1). Only the newest volume's
voxels are kept (the recorder owns the full series on disk).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtcontrol.project import Design
from rtcontrol.recording.summary import feedback_number, spans
from rtcontrol.scanner.volume import STAGES, Timeline, Volume

MOTION = ("tx", "ty", "tz", "rx", "ry", "rz")
#: Stages whose latency (ms after ``file_seen``) is plotted per volume.
LATENCY_STAGES = tuple(s for s in STAGES if s != "file_seen")


class Series:
    """A growable float64 array indexed by volume index; missing entries are NaN."""

    def __init__(self, capacity: int = 256, width: int = 1) -> None:
        self.width = width
        self._data = np.full((capacity, width), np.nan)
        self.length = 0

    def set(self, index: int, value: Any, column: int = 0) -> None:
        if index < 0:
            raise IndexError(f"volume index {index} is negative")
        if index >= self._data.shape[0]:
            grown = np.full((max(index + 1, 2 * self._data.shape[0]), self.width), np.nan)
            grown[: self._data.shape[0]] = self._data
            self._data = grown
        self._data[index, column] = value
        self.length = max(self.length, index + 1)

    def get(self, index: int, column: int = 0) -> float:
        return float(self._data[index, column]) if 0 <= index < self.length else math.nan

    def values(self, column: int = 0) -> np.ndarray:
        """A view of the filled part (no copy); valid until the next ``set``."""
        return self._data[: self.length, column]

    @property
    def nbytes(self) -> int:
        return self._data.nbytes


@dataclass(frozen=True, eq=False)
class StatMap:
    """The newest statistical map of one name (e.g. the project's t-map), as the worker sent it (compared by
    identity: each arrival is a new map)."""

    name: str
    index: int  # the volume it came with
    data: np.ndarray  # on ``affine``'s grid; float16 as it came from the worker
    affine: np.ndarray
    peak: float  # largest |value|

    def same_grid(self, shape: tuple[int, ...], affine: np.ndarray) -> bool:
        """Whether the map lies on this voxel grid (then its voxels are the volume's)."""
        return self.data.shape == tuple(shape[:3]) and np.allclose(self.affine, affine, atol=1e-4)

    def sample(self, ijk: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """The map's values (nearest voxel; 0 outside it) at voxel coordinates ``ijk`` (3, ...) of the grid
        ``affine``: a project whose maps are on another grid (an earlier run's reference image) is drawn on
        the live views' volume by sampling only the voxels drawn."""
        pull = np.linalg.solve(self.affine, np.asarray(affine, dtype=np.float64))  # view voxel -> map voxel
        ijk = np.asarray(ijk, dtype=np.float64)
        lead = (3,) + (1,) * (ijk.ndim - 1)
        src = np.rint(np.tensordot(pull[:3, :3], ijk, axes=1) + pull[:3, 3].reshape(lead)).astype(np.intp)
        inside = np.all((src >= 0) & (src < np.asarray(self.data.shape).reshape(lead)), axis=0)
        out = np.zeros(ijk.shape[1:], np.float32)
        out[inside] = self.data[tuple(s[inside] for s in src)]
        return out

    def on_grid(self, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
        """The whole map on another voxel grid: itself when the grids agree, else sampled by nearest neighbour."""
        if self.same_grid(shape, affine):
            return self.data
        return self.sample(np.indices(tuple(int(n) for n in shape[:3])), affine)


class RunModel:
    """Timecourses, latencies and the newest volume of the current run."""

    def __init__(self) -> None:
        self.reset("")

    def reset(self, run: str) -> None:
        self.run = run
        self.latest: Volume | None = None
        self.latest_scaled: np.ndarray | None = None
        self.roi_mask: np.ndarray | None = None
        self.design: Design | None = None  # the project's blocks, from the worker at the run's start
        self._blocks_of: Design | None = None
        self._blocks: list[tuple[int, int, int]] = []
        self.volumes = 0
        self.feedbacks = 0
        self.delivered = 0  # values a stimulus program (or the built-in display) took
        self.at_agent = 0  # values the subject agent acknowledged, taken or not
        self.valued: set[int] = set()  # volumes whose feedback had a value (sent on to the subject)
        self.outcomes: dict[int, str] = {}  # volume -> the subject agent's latest word on its value
        self.global_mean = Series()
        self.feedback = Series()
        self.motion = Series(width=len(MOTION))
        self.metrics: dict[str, Series] = {}
        self.stamps = Series(width=len(STAGES))
        self.last_arrival: float | None = None
        self.last_feedback_value: Any = None
        self.last_index = -1
        self.maps: dict[str, StatMap] = {}  # the newest statistical map of each name (the t-map overlay)

    # --- updates ------------------------------------------------------------------------
    def add_volume(self, volume: Volume, arrival: float) -> None:
        scaled = volume.scaled(np.float32)
        self.latest, self.latest_scaled = volume, scaled
        self.volumes += 1
        self.last_arrival = arrival
        self.last_index = max(self.last_index, volume.index)
        self.global_mean.set(volume.index, float(scaled.mean(dtype=np.float64)))
        self._stamp(volume.index, volume.timeline)

    def add_feedback(self, index: int, value: Any, metrics: dict[str, float | None], timeline: Timeline) -> None:
        self.feedbacks += 1
        self.last_feedback_value = value
        if value is not None:
            self.valued.add(index)
        number = feedback_number(value)
        if number is not None:
            self.feedback.set(index, number)
        for name, v in metrics.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            if name in MOTION:
                self.motion.set(index, float(v), MOTION.index(name))
            else:
                self.metrics.setdefault(name, Series()).set(index, float(v))
        self._stamp(index, timeline)

    def add_map(self, name: str, index: int, data: np.ndarray, affine: np.ndarray, peak: float | None = None) -> bool:
        """Keep the map if it is the newest of its name (a restarted worker's catch-up sends older ones
        again: they are not shown over a newer one); returns whether it was kept. ``peak`` (its largest
        |value|) comes with a map from the worker; else it is computed here."""
        held = self.maps.get(name)
        if held is not None and held.index > index:
            return False
        data = np.asarray(data)
        if peak is None:
            peak = float(np.abs(data, dtype=np.float32).max()) if data.size else 0.0
        self.maps[name] = StatMap(name, int(index), data, np.asarray(affine, dtype=np.float64), peak)
        return True

    def add_delivery(self, index: int, timeline: Timeline, outcome: str = "") -> None:
        """The subject side's stamps (an ack, then the consumers' report): counted once per volume.

        Delivered means a stimulus program took it (outcome "delivered", or a ``consumer_taken`` stamp);
        reaching the agent alone is counted in :attr:`at_agent`."""
        column = STAGES.index("subject_delivered")
        if math.isnan(self.stamps.get(index, column)) and timeline.get("subject_delivered") is not None:
            self.at_agent += 1
        if outcome != DELIVERED and timeline.get("consumer_taken") is not None:
            outcome = DELIVERED
        if self.outcomes.get(index) != DELIVERED and outcome:
            if outcome == DELIVERED:
                self.delivered += 1
            self.outcomes[index] = outcome
        self._stamp(index, timeline)

    def undelivered(self) -> dict[str, list[int]]:
        """Volumes whose feedback value reached no stimulus program, by why (see :data:`WHY`)."""
        out: dict[str, list[int]] = {}
        for index in sorted(self.valued):
            outcome = self.outcomes.get(index, "")
            if outcome == DELIVERED:
                continue
            why = outcome if outcome in ("no_consumer", "dropped", "cancelled") else "unconfirmed"
            out.setdefault(why, []).append(index)
        return out

    def delivery_report(self) -> str:
        """One plain sentence: how many values reached a stimulus program, and what became of the rest."""
        total = len(self.valued)
        parts = [f"{self.delivered} of {total} feedback value{'s' if total != 1 else ''} reached a stimulus program"]
        for why, indices in self.undelivered().items():
            parts.append(f"{len(indices)} {WHY[why]} ({volume_list(indices)})")
        return "; ".join(parts)

    def _stamp(self, index: int, timeline: Timeline) -> None:
        for stage, t in timeline.stamps.items():
            if stage in STAGES:
                self.stamps.set(index, t, STAGES.index(stage))

    # --- reads --------------------------------------------------------------------------
    def latency_ms(self, stage: str, since: str = "file_seen") -> np.ndarray:
        """Per volume: milliseconds from ``since`` to ``stage`` (NaN where not stamped)."""
        a = self.stamps.values(STAGES.index(since))
        b = self.stamps.values(STAGES.index(stage))
        return (b - a) * 1e3

    def timeline(self, index: int) -> Timeline:
        """The stamps known for one volume, as a Timeline."""
        if not 0 <= index < self.stamps.length:
            return Timeline()
        row = [self.stamps.get(index, c) for c in range(len(STAGES))]
        return Timeline({stage: t for stage, t in zip(STAGES, row) if not math.isnan(t)})

    def condition_blocks(self) -> list[tuple[int, int, int]]:
        """The run's condition blocks as ``(first, last + 1, code)``: the whole design when the project
        declared one (known ahead of the volumes), else what its ``condition`` metric said so far."""
        if self.design is not None:
            if self._blocks_of is not self.design:  # once per design, not per frame
                self._blocks_of, self._blocks = self.design, design_runs(self.design)
            return self._blocks
        return condition_runs(self.metric("condition"))

    def metric(self, name: str) -> np.ndarray:
        s = self.metrics.get(name)
        return s.values() if s is not None else np.empty(0)

    @property
    def nbytes(self) -> int:
        """Memory held by the model (arrays and the newest volume)."""
        total = sum(s.nbytes for s in (self.global_mean, self.feedback, self.motion, self.stamps))
        total += sum(s.nbytes for s in self.metrics.values())
        if self.latest is not None:
            total += self.latest.data.nbytes
        if self.latest_scaled is not None:
            total += self.latest_scaled.nbytes
        total += sum(m.data.nbytes for m in self.maps.values())
        return total


DELIVERED = "delivered"
#: What became of a value that reached no stimulus program, as said in the run's summary.
WHY = {
    "no_consumer": "reached the subject agent with no stimulus program connected",
    "dropped": "reached the subject agent but no stimulus program took it (it left, or a newer value replaced it)",
    "cancelled": "cancelled because the run stopped before their onset",
    "unconfirmed": "not confirmed by the subject agent as taken by a stimulus program",
}


def volume_list(indices: list[int]) -> str:
    """``volumes 3, 4, 7-20``: consecutive runs joined, so a long loss stays one short line."""
    return f"volume{'s' if len(indices) != 1 else ''} {spans(indices)}"


def condition_runs(codes: np.ndarray) -> list[tuple[int, int, int]]:
    """Consecutive volumes of the same condition code: ``(first, last + 1, code)``; NaN volumes break runs."""
    out: list[tuple[int, int, int]] = []
    start, current = 0, None
    for i, c in enumerate(codes.tolist()):
        code = None if math.isnan(c) else int(c)
        if code != current:
            if current is not None:
                out.append((start, i, current))
            start, current = i, code
    if current is not None:
        out.append((start, len(codes), current))
    return out


def design_runs(design: Design) -> list[tuple[int, int, int]]:
    """A design's blocks as :func:`condition_runs` gives them: ``(first, last + 1, code)``, in onset order."""
    return sorted((b.onset, b.onset + b.volumes, design.conditions.index(b.condition)) for b in design.blocks)
