"""Resuming a run after the worker restarted mid-run: which feedback is catch-up, and the volumes to replay.

When the worker link reconnects to a worker that does not know the console's session (it was killed
and started again), the worker client starts the run again there with the same settings and sends it
every volume of the run so far, in order and at full speed: the ones it still holds unacknowledged
from memory, the rest read back from the console's own recording (:func:`recorded_volumes`). The
project so rebuilds its state, and the new worker processes each volume exactly once.

The feedback it computes for old volumes is **catch-up**: recorded in the run's journal as a
``catch_up_feedback`` event, never passed to the subject agent (so no stimulus program shows it) and
not shown as live feedback. The rule (:class:`CatchUp`):

    From the moment the console finds the worker restarted until it has caught up, feedback for a
    volume older than the newest volume that has arrived at the console is catch-up. The first
    feedback for the newest arrived volume ends the catch-up: from that volume on, feedback is live.

So the replayed volumes and any that arrived while the worker was down or catching up (their
feedback would come too late) are catch-up; the first volume the worker keeps up with is live again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rtcontrol.recording.summary import spans as volume_spans
from rtcontrol.scanner.volume import Timeline, Volume

if TYPE_CHECKING:
    from rtcontrol.recording.journal import JournalContents


def spans(indices: Iterable[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` as ``"0..2, 5, 7, 8"`` (sorted, each index once)."""
    return volume_spans(indices, through="..")


def _volumes(indices: range) -> str:
    return f"volume {indices[0]}" if len(indices) == 1 else f"volumes {spans(indices)}"


class CatchUp:
    """The catch-up rule of one run (see the module docstring); pure bookkeeping, no I/O."""

    def __init__(self) -> None:
        self.newest = -1  # the newest volume index that arrived at the console
        self.active = False  # catching up after a restart
        self.restarted_at = 0  # N: volumes the console had when it found the worker restarted
        self.live_from: int | None = None  # M: the first volume with live feedback after the restart
        self.shown: set[int] = set()  # volumes whose feedback was passed on live (by any worker)
        self.answered: set[int] = set()  # volumes with any feedback, live or catch-up
        self.caught: list[int] = []  # catch-up feedback of the current restart, in arrival order
        self.restarts = 0
        self.reports: list[str] = []  # one statement per restart: what happened, for the log and the summary

    def arrived(self, index: int) -> None:
        self.newest = max(self.newest, int(index))

    def restart(self) -> int:
        """The worker restarted: catch up from here. Returns N, the volumes the console has so far."""
        if self.active:  # restarted again before it caught up: the earlier restart is said as it stands
            self.reports.append(self.statement())
        self.active = True
        self.restarts += 1
        self.restarted_at = self.newest + 1
        self.live_from = None
        self.caught = []
        return self.restarted_at

    def is_catch_up(self, index: int) -> bool:
        """Classify the feedback for ``index`` as it arrives (call once per feedback value)."""
        index = int(index)
        self.answered.add(index)
        if self.active and index < self.newest:
            self.caught.append(index)
            return True
        self.shown.add(index)  # before the statement below: this volume's feedback is shown, not lost
        if self.active:  # the worker is level with the scanner again
            self.active = False
            self.live_from = index
            self.reports.append(self.statement())
        return False

    def statement(self) -> str:
        """What happened at the latest restart, in one sentence (also while still catching up)."""
        n = self.restarted_at
        dark = [i for i in range(n) if i not in self.shown]
        text = f"worker restarted at volume {n}; run restarted there, "
        text += (f"{_volumes(range(n))} replayed as catch-up (no feedback shown for {len(dark)} of them"
                 + (f": {spans(dark)})" if dark else ")") if n else "no volume to replay")
        if self.live_from is None:
            return text + (f"; not caught up yet: feedback for {len(self.caught)} volume(s) was catch-up, "
                           "none live since")
        m = self.live_from
        if m > n:
            text += f"; {_volumes(range(n, m))} arrived during the catch-up (feedback recorded, not shown)"
        return text + f"; live again from volume {m}"

    def unfinished(self) -> str | None:
        """At the run's end: the statement for a restart that never caught up, else None."""
        if not self.active:
            return None
        self.active = False
        report = self.statement()
        self.reports.append(report)
        return report


class RecordedVolumes(Mapping[int, Volume]):
    """Volumes of a run as the console recorded them, by index; each is read from disk when asked for,
    so replaying a long run never holds it in memory whole."""

    def __init__(self, contents: JournalContents, records: dict[int, dict[str, Any]], run: str) -> None:
        self._contents, self._records, self._run = contents, records, run

    def __getitem__(self, index: int) -> Volume:
        r = self._records[index]
        return Volume(
            data=np.ascontiguousarray(self._contents.volume_data(r)), affine=np.asarray(r["affine"], dtype=np.float64),
            run=self._run, index=index, tr=r.get("tr"), slice_timing=r.get("slice_timing"),
            scl_slope=float(r.get("scl_slope", 1.0)), scl_inter=float(r.get("scl_inter", 0.0)),
            acquisition_time=r.get("acquisition_time"), header=dict(r.get("header") or {}),
            timeline=Timeline.from_dict(r.get("timeline")),
        )

    def __contains__(self, index: object) -> bool:
        return index in self._records  # without reading the voxels

    def __iter__(self) -> Iterator[int]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)


def recorded_volumes(run_dir: Path | str, run: str, indices: Iterable[int]) -> RecordedVolumes:
    """The volumes ``indices`` of ``run`` as the console recorded them (journal + raw bytes), by index.

    Reads the journal (blocking: call it in a thread); the voxels are read per volume when asked for.
    Indices not in the record are left out, so the caller can say exactly which it could not replay.
    """
    from rtcontrol.recording.journal import read_journal

    wanted = {int(i) for i in indices}
    contents = read_journal(run_dir)
    records = {int(r["index"]): r for r in contents.volumes() if int(r["index"]) in wanted and r.get("run") == run}
    return RecordedVolumes(contents, dict(sorted(records.items())), run)
