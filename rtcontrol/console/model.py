"""Per-run numbers the console shows: a Qt-free model the GUI plots and tests inspect.

Everything per volume lives in preallocated numpy arrays that grow by doubling, so a
2,000-volume run costs a few hundred kB and an update is O(1). Only the newest volume's
voxels are kept (the recorder owns the full series on disk).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

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


class RunModel:
    """Timecourses, latencies and the newest volume of the current run."""

    def __init__(self) -> None:
        self.reset("")

    def reset(self, run: str) -> None:
        self.run = run
        self.latest: Volume | None = None
        self.latest_scaled: np.ndarray | None = None
        self.roi_mask: np.ndarray | None = None
        self.volumes = 0
        self.feedbacks = 0
        self.delivered = 0
        self.global_mean = Series()
        self.feedback = Series()
        self.motion = Series(width=len(MOTION))
        self.metrics: dict[str, Series] = {}
        self.stamps = Series(width=len(STAGES))
        self.last_arrival: float | None = None
        self.last_feedback_value: Any = None
        self.last_index = -1

    # --- updates ------------------------------------------------------------------------
    def add_volume(self, volume: Volume, arrival: float) -> None:
        scaled = volume.scaled(np.float32)
        self.latest, self.latest_scaled = volume, scaled
        self.volumes += 1
        self.last_arrival = arrival
        self.last_index = max(self.last_index, volume.index)
        self.global_mean.set(volume.index, float(scaled.mean(dtype=np.float64)))
        self._stamp(volume.index, volume.timeline)

    def add_feedback(self, index: int, value: Any, metrics: dict[str, float], timeline: Timeline) -> None:
        self.feedbacks += 1
        self.last_feedback_value = value
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

    def add_delivery(self, index: int, timeline: Timeline) -> None:
        """The subject side's stamps (an ack, then the consumers' report): counted once per volume."""
        column = STAGES.index("subject_delivered")
        if math.isnan(self.stamps.get(index, column)) and timeline.get("subject_delivered") is not None:
            self.delivered += 1
        self._stamp(index, timeline)

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

    def metric(self, name: str) -> np.ndarray:
        s = self.metrics.get(name)
        return s.values() if s is not None else np.empty(0)

    @property
    def has_motion(self) -> bool:
        return self.motion.length > 0

    @property
    def nbytes(self) -> int:
        """Memory held by the model (arrays and the newest volume)."""
        total = sum(s.nbytes for s in (self.global_mean, self.feedback, self.motion, self.stamps))
        total += sum(s.nbytes for s in self.metrics.values())
        if self.latest is not None:
            total += self.latest.data.nbytes
        if self.latest_scaled is not None:
            total += self.latest_scaled.nbytes
        return total


def feedback_number(value: Any) -> float | None:
    """The number to plot for a feedback value: itself, or a dict's ``value``/first number."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        if isinstance(value.get("value"), (int, float)):
            return float(value["value"])
        for v in value.values():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
    return None


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
