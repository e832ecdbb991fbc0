"""Figures printed by ``make bench``: ``BENCH <name> key=value ...``, one per line."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Figure:
    name: str
    values: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def line(self) -> str:
        parts = [f"BENCH {self.name}"] + [f"{k}={_fmt(v)}" for k, v in self.values.items()]
        if self.note:
            parts.append(f"# {self.note}")
        return " ".join(parts)


def _fmt(v: float) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def timing(name: str, seconds: Iterable[float], note: str = "") -> Figure:
    """Median, 90th and 99th percentile in ms of a list of durations in seconds."""
    ms = np.asarray(list(seconds), dtype=np.float64) * 1e3
    if ms.size == 0:
        return Figure(name, {"n": 0}, note or "no samples")
    return Figure(
        name,
        {
            "median_ms": float(np.median(ms)),
            "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()),
            "n": int(ms.size),
        },
        note,
    )
