"""Runs and their order: which series a volume belongs to, and handing volumes on in acquisition order.

Pure bookkeeping, no I/O and no clock of its own (the caller passes ``now``), so it is tested directly.

* A new series (SeriesInstanceUID, or the reader's run name where a file has none) starts a new run,
  named after its series number (``series-007``).
* Volumes leave in index order. One that arrives early is held until the missing ones come; after
  ``gap_timeout`` seconds the gap is reported and the held volumes are released. A volume that turns up
  after its gap was given up on is still handed on (reported as late): data are never dropped silently.
* A second delivery of an index already seen is reported and dropped.
* A volume whose matrix or geometry differs from the run's first is refused and reported; its index
  stays open (the right volume may still come) and the run goes on.
* A gap is waited for about one TR (at most ``gap_timeout``); the end-of-run note names every index that
  never arrived.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from rtcontrol.scanner.volume import Volume


class WatchKind(StrEnum):
    """What a watch event is about (its text is what logs and the run journal keep)."""

    NEW_RUN = "new_run"  # a new series started: a new run
    RUN_END = "run_end"  # the run's last volume was handed on (the message names missing volumes)
    FILE_ERROR = "file_error"  # a foreign or corrupt file, skipped
    GAVE_UP = "gave_up"  # a file that never completed
    DUPLICATE = "duplicate"  # a volume or slice delivered again, ignored
    GAP = "gap"  # volumes missing; later ones released
    LATE = "late"  # a volume arriving after its gap was reported
    ASSEMBLY = "assembly"  # the slice assembler dropped a slice or volume
    REFUSED = "refused"  # a volume that does not fit its run


@dataclass
class RunNote:
    """Something the operator should hear about: kind is new_run, duplicate, gap, late or run_end."""

    kind: WatchKind
    run: str
    message: str
    index: int | None = None
    source: str | None = None  # the file a refused volume came from, when known


@dataclass
class Run:
    """One series being received."""

    run_id: str
    key: str
    series_number: int | None
    description: str
    next_index: int = 0  # the next index to hand on
    held: dict[int, Volume] = field(default_factory=dict)
    seen: set[int] = field(default_factory=set)
    emitted: int = 0
    waiting_since: float | None = None  # when the first volume was held back behind a gap
    source_format: str | None = None
    shape: tuple[int, ...] | None = None  # the run's first volume's matrix and affine: later ones must match
    affine: Any = None
    tr: float | None = None  # the scanner's TR (s): how long a gap is waited for
    missing: set[int] = field(default_factory=set)  # indices passed over and never received


@dataclass
class Released:
    """What one call decided: volumes to hand on now (in order) and notes to report."""

    volumes: list[Volume] = field(default_factory=list)
    notes: list[RunNote] = field(default_factory=list)

    def extend(self, other: Released) -> None:
        self.volumes.extend(other.volumes)
        self.notes.extend(other.notes)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40]


class RunTracker:
    """Assigns runs and orders volumes by acquisition index."""

    def __init__(self, gap_timeout: float = 2.0) -> None:
        self.gap_timeout = gap_timeout
        self.runs: dict[str, Run] = {}
        self._ids: set[str] = set()

    # -- runs ------------------------------------------------------------------------------------
    @staticmethod
    def key_of(volume: Volume) -> str:
        return volume.series_uid or f"run:{volume.run}"

    def _new_run(self, volume: Volume) -> Run:
        header: dict[str, Any] = volume.header
        number = header.get("SeriesNumber")
        try:
            number = int(number) if number not in (None, "") else None
        except (TypeError, ValueError):
            number = None
        description = str(header.get("SeriesDescription") or header.get("ProtocolName") or "")
        if number is not None:
            base = f"series-{number:03d}"
        elif volume.run and volume.run != "run":
            base = _slug(volume.run) or "series"
        else:
            base = f"series-{_slug(description) or 'unnamed'}"
        run_id, n = base, 2
        while run_id in self._ids:  # the same number again (a repeated series): keep runs apart
            run_id, n = f"{base}-{n}", n + 1
        self._ids.add(run_id)
        run = Run(run_id, self.key_of(volume), number, description,
                  source_format=header.get("SourceFormat"))  # fmt: skip
        self.runs[run.key] = run
        return run

    # -- volumes ---------------------------------------------------------------------------------
    def add(self, volume: Volume, now: float, source: str | None = None) -> Released:
        """Take one parsed volume; return what can be handed on now. A volume whose matrix or geometry
        differs from the run's first is refused (reported, never handed on, its index still open)."""
        out = Released()
        run = self.runs.get(self.key_of(volume))
        if run is None:
            run = self._new_run(volume)
            what = f"{run.description!r} " if run.description else ""
            out.notes.append(RunNote(WatchKind.NEW_RUN, run.run_id, f"new run {run.run_id}: series {what}started"))
        index = volume.index
        if run.shape is None:
            run.shape, run.affine, run.tr = volume.shape, volume.affine, volume.tr
        elif volume.shape != run.shape or not np.allclose(volume.affine, run.affine, atol=1e-3):
            what = (f"matrix {'x'.join(map(str, volume.shape))} where the run's first volume has "
                    f"{'x'.join(map(str, run.shape))}" if volume.shape != run.shape else
                    "a different position or orientation (affine) than the run's first volume")  # fmt: skip
            where = f" ({Path(source).name})" if source else ""
            message = f"{run.run_id} volume {index}{where}: {what}; refused, the run goes on without it"
            out.notes.append(RunNote(WatchKind.REFUSED, run.run_id, message, index, source))
            return out
        volume.run = run.run_id
        if index in run.seen:
            out.notes.append(
                RunNote(WatchKind.DUPLICATE, run.run_id, f"{run.run_id} volume {index} delivered again: ignored", index)
            )
            return out
        run.seen.add(index)
        if index < run.next_index:  # its gap was given up on: hand it on anyway, out of order
            run.missing.discard(index)
            message = f"{run.run_id} volume {index} arrived after its gap was reported: passed on out of order"
            out.notes.append(RunNote(WatchKind.LATE, run.run_id, message, index))
            out.volumes.append(volume)
            run.emitted += 1
            return out
        run.held[index] = volume
        out.extend(self._drain(run, now))
        return out

    def _drain(self, run: Run, now: float) -> Released:
        out = Released()
        while run.next_index in run.held:
            out.volumes.append(run.held.pop(run.next_index))
            run.next_index += 1
            run.emitted += 1
        if run.held:
            if run.waiting_since is None:
                run.waiting_since = now
        else:
            run.waiting_since = None
        return out

    def _skip_gap(self, run: Run, now: float) -> Released:
        first_held = min(run.held)
        missing = (f"volume {run.next_index}" if first_held == run.next_index + 1
                   else f"volumes {run.next_index}-{first_held - 1}")  # fmt: skip
        message = (f"{run.run_id}: {missing} did not arrive within {self.wait(run):g} s; "
                   f"passing on volume {first_held} and later")
        note = RunNote(WatchKind.GAP, run.run_id, message, run.next_index)
        run.missing.update(i for i in range(run.next_index, first_held) if i not in run.seen)
        run.next_index = first_held
        run.waiting_since = None
        out = self._drain(run, now)
        out.notes.insert(0, note)
        return out

    def wait(self, run: Run) -> float:
        """How long a gap is waited for: about one TR (a volume more than a TR behind its successor is
        late for real time), at most ``gap_timeout``."""
        return min(self.gap_timeout, run.tr) if run.tr and run.tr > 0 else self.gap_timeout

    def expire(self, now: float) -> Released:
        """Release volumes held longer than ``gap_timeout`` behind a gap (call this on a timer)."""
        out = Released()
        for run in self.runs.values():
            if run.held and run.waiting_since is not None and now - run.waiting_since >= self.wait(run):
                out.extend(self._skip_gap(run, now))
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has something to do (monotonic seconds), or None."""
        times = [r.waiting_since + self.wait(r) for r in self.runs.values() if r.waiting_since is not None]
        return min(times) if times else None

    def flush(self, now: float) -> Released:
        """At the end: release everything still held (reporting its gaps) and close the runs."""
        out = Released()
        for run in self.runs.values():
            while run.held:
                out.extend(self._skip_gap(run, now))
            gone = sorted(run.missing)
            lost = f"; missing: volume{'s' if len(gone) > 1 else ''} {', '.join(map(str, gone))}" if gone else ""
            message = f"{run.run_id}: {run.emitted} volumes received{lost}"
            out.notes.append(RunNote(WatchKind.RUN_END, run.run_id, message))
        return out
