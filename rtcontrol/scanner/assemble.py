"""Assemble one-file-per-slice series into volumes: by slice position and temporal index.

Live (:class:`SliceAssembler`) volumes are handed on as they complete; offline
(:func:`assemble_offline`, for convert and replay of a complete folder) every slice is gathered
first and grouped by the files' own temporal tags, so the listing order does not matter.

A volume is complete when it holds ``slices_per_volume`` distinct slice positions (the count the
header gives, or the one learnt from the first volume when it does not). Volumes leave in
acquisition order (temporal index), whatever order the files arrived in; a volume that stays
incomplete while ``max_wait`` later volumes are complete is given up and reported, so one lost
file cannot stall a run. Instance numbers are never used to order slices in space.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtcontrol.scanner.geometry import affine_lps_to_ras, orientation
from rtcontrol.scanner.sidecar import series_name
from rtcontrol.scanner.volume import SliceImage, Volume

log = logging.getLogger(__name__)

POSITION_TOLERANCE_MM = 0.01


@dataclass
class _Pending:
    slices: dict[int, SliceImage] = field(default_factory=dict)  # keyed by position in 1/100 mm


class SliceAssembler:
    """Collects the slices of ONE series; ``add`` returns the volumes it completes, in order."""

    def __init__(self, slices_per_volume: int | None = None, max_wait: int | None = 2) -> None:
        """``max_wait``: later complete volumes tolerated before an incomplete one is given up
        (None: never give up, for offline conversion)."""
        self.slices_per_volume = slices_per_volume
        self.max_wait = max_wait
        self.problems: list[str] = []  # human-readable reports (dropped/duplicate/late slices)
        self._pending: dict[int, _Pending] = {}
        self._last_emitted: int | None = None
        self._seen_per_position: dict[int, int] = {}  # for series without a temporal index
        self._series_uid: str | None = None
        self._geometry: tuple | None = None
        self._handed_on: set[Path] = set()  # files of volumes already emitted (duplicates are fine)

    def add(self, s: SliceImage) -> list[Volume]:
        """Take one slice; return the volumes that are now complete and next in order."""
        if self._series_uid is None:
            self._series_uid = s.series_uid
        elif s.series_uid != self._series_uid:
            raise ValueError(f"{s.path}: slice of series {s.series_uid} given to the assembler of {self._series_uid}")
        if self._geometry is None:
            self._geometry = s.geometry_key
        elif s.geometry_key != self._geometry:
            self._report(f"{s.path}: slice orientation/matrix/spacing differs from the series; skipped")
            return []
        if self.slices_per_volume is None and s.slices_per_volume:
            self.slices_per_volume = s.slices_per_volume
        pos_key = int(round(s.slice_position / POSITION_TOLERANCE_MM))
        t = s.temporal_index
        if t is None:  # no temporal tag: the n-th slice seen at a position belongs to volume n
            t = self._seen_per_position.get(pos_key, 0)
            self._seen_per_position[pos_key] = t + 1
        if self._last_emitted is not None and t <= self._last_emitted:
            if s.path in self._handed_on:
                return []
            self._report(f"{s.path}: slice of volume {t} arrived after that volume was handed on; ignored")
            return []
        pending = self._pending.setdefault(t, _Pending())
        if pos_key in pending.slices:
            if pending.slices[pos_key].path != s.path:
                self._report(f"{s.path}: second slice at {s.slice_position:.2f} mm in volume {t} "
                             f"(first: {pending.slices[pos_key].path.name}); kept the first")
            return []
        pending.slices[pos_key] = s
        if self.slices_per_volume is None and len(self._pending) > 1:
            first = min(self._pending)
            if t > first:  # a later volume started: the first one is as big as volumes get
                self.slices_per_volume = len(self._pending[first].slices)
        return self._drain()

    def flush(self) -> list[Volume]:
        """End of run: hand on the complete volumes still held, report the incomplete ones."""
        if self.slices_per_volume is None and self._pending:
            self.slices_per_volume = max(len(p.slices) for p in self._pending.values())
        out: list[Volume] = []
        for t in sorted(self._pending):
            pending = self._pending.pop(t)
            if len(pending.slices) == self.slices_per_volume:
                out.append(self._build(t, pending))
                self._last_emitted = t
            else:
                self._report(f"volume {t} incomplete at end of run: {len(pending.slices)} of "
                             f"{self.slices_per_volume} slices; dropped")
        return out

    @property
    def pending_volumes(self) -> dict[int, int]:
        """Temporal index -> slices held, for volumes not yet handed on."""
        return {t: len(p.slices) for t, p in sorted(self._pending.items())}

    def _complete(self, t: int) -> bool:
        n = self.slices_per_volume
        return n is not None and len(self._pending[t].slices) >= n

    def _drain(self) -> list[Volume]:
        out: list[Volume] = []
        while self._pending:
            t = min(self._pending)
            if self._complete(t):
                out.append(self._build(t, self._pending.pop(t)))
                self._last_emitted = t
                continue
            later_complete = sum(1 for u in self._pending if u > t and self._complete(u))
            if self.max_wait is not None and later_complete >= self.max_wait:
                dropped = self._pending.pop(t)
                self._last_emitted = t
                self._report(f"volume {t} given up: {len(dropped.slices)} of {self.slices_per_volume} "
                             f"slices while {later_complete} later volumes are complete")
                continue
            break
        return out

    def _build(self, t: int, pending: _Pending) -> Volume:
        self._handed_on.update(s.path for s in pending.slices.values())
        return build_volume(t, [pending.slices[k] for k in sorted(pending.slices)])

    def _report(self, message: str) -> None:
        log.warning(message)
        self.problems.append(message)


def group_offline(slices: list[SliceImage]) -> tuple[dict[int, list[SliceImage]], int, list[str], list[str]]:
    """A complete folder's slices of ONE series grouped into volumes, whatever order the files were listed in.

    Unlike a live stream nothing is handed on early: all slices are grouped by their own temporal
    index (TemporalPositionIdentifier, label/control, AcquisitionNumber, GE instance numbers); slices
    without one are counted per position in InstanceNumber order (then acquisition time, then name).
    Returns ({index: slices}, slices per volume, problems, warnings): problems are slices lost (the
    output misses something), warnings cost nothing (an identical file given twice).
    """
    problems: list[str] = []
    warnings: list[str] = []
    if not slices:
        return {}, 0, problems, warnings
    keys = [s.geometry_key for s in slices]
    geometry = max(set(keys), key=keys.count)
    kept = []
    for s in slices:
        if s.geometry_key != geometry:
            problems.append(f"{s.path}: slice orientation/matrix/spacing differs from the rest of its series; skipped")
        else:
            kept.append(s)
    kept.sort(key=lambda s: (s.instance_number if s.instance_number is not None else 1 << 30,
                             s.acquisition_time if s.acquisition_time is not None else 0.0, s.path.name))  # fmt: skip
    groups: dict[int, dict[int, SliceImage]] = {}
    counts: dict[int, int] = {}
    for s in kept:
        pos = int(round(s.slice_position / POSITION_TOLERANCE_MM))
        t = s.temporal_index
        if t is None:
            t = counts.get(pos, 0)
            counts[pos] = t + 1
        group = groups.setdefault(t, {})
        first = group.get(pos)
        if first is None:
            group[pos] = s
        elif first.path != s.path and np.array_equal(first.pixels, s.pixels):
            warnings.append(f"{s.path.name}: the same slice as {first.path.name} (volume {t}, {s.slice_position:.2f} "
                            "mm); one kept")
        elif first.path != s.path:
            problems.append(f"{s.path.name}: a second, different slice at {s.slice_position:.2f} mm in volume {t} "
                            f"(first: {first.path.name}); kept the first")  # fmt: skip
    expected = next((s.slices_per_volume for s in kept if s.slices_per_volume), None)
    expected = expected or max(len(g) for g in groups.values())
    out: dict[int, list[SliceImage]] = {}
    for t in sorted(groups):
        group = groups[t]
        if len(group) == expected:
            out[t] = list(group.values())
        else:
            problems.append(f"volume {t}: {len(group)} of {expected} slices present; not written "
                            f"(first file: {min(s.path.name for s in group.values())})")  # fmt: skip
    return out, expected, problems, warnings


def assemble_offline(slices: list[SliceImage]) -> tuple[list[Volume], list[str], list[str]]:
    """:func:`group_offline`, then each complete group built into a Volume (by index)."""
    groups, _, problems, warnings = group_offline(slices)
    return [build_volume(t, group) for t, group in groups.items()], problems, warnings


def build_volume(index: int, slices: list[SliceImage]) -> Volume:
    """Slices of one volume (any order) to a Volume with k along increasing slice position."""
    slices = sorted(slices, key=lambda s: s.slice_position)
    first, last = slices[0], slices[-1]
    row, col, normal = orientation(first.orientation)
    n = len(slices)
    if n > 1:
        step = (last.position - first.position) / (n - 1)
    else:
        gap = first.header.get("SpacingBetweenSlices") or first.header.get("SliceThickness") or 1.0
        step = normal * float(gap)
    affine = affine_lps_to_ras(row, col, first.pixel_spacing, step, first.position)
    data = np.stack([s.pixels for s in slices])  # (k, row, col)
    timing = _timing(slices)
    times = [s.acquisition_time for s in slices if s.acquisition_time is not None]
    return Volume(
        data=data.transpose(2, 1, 0),
        affine=affine,
        run=series_name(first.header),
        index=index,
        tr=first.tr,
        slice_timing=timing,
        scl_slope=first.scl_slope,
        scl_inter=first.scl_inter,
        acquisition_time=min(times) if times else None,
        header=first.header,
        series_uid=first.series_uid,
        source=str(first.path),
    )


def _timing(slices: list[SliceImage]) -> tuple[float, ...] | None:
    slice_times = [s.slice_time for s in slices if s.slice_time is not None]
    if len(slice_times) == len(slices):
        return tuple(float(t) for t in slice_times)
    times = [s.acquisition_time for s in slices if s.acquisition_time is not None]
    if len(times) == len(slices) and max(times) > min(times):
        t0 = min(times)
        return tuple(round(float(t) - t0, 6) for t in times)
    return None
