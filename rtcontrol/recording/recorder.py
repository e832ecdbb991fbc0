"""The recorder: every run written to disk as it happens, without slowing the event loop.

The console calls :meth:`Recorder.record_volume` (and friends) from its asyncio loop for every
volume. Each call only puts a tuple on a queue (a few microseconds); a writer thread does the disk
work (see :mod:`rtcontrol.recording.journal` for the durability order). A disk error never raises
into the caller: the recorder keeps going, reports the error once per kind through ``on_error`` and
:attr:`Recorder.errors`, and whatever was written before stays readable. At the end,
:meth:`Recorder.finish` turns the run folder into a BIDS dataset (:mod:`rtcontrol.recording.bids`).
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rtcontrol import __version__
from rtcontrol.files import atomic_write
from rtcontrol.recording.bids import write_run
from rtcontrol.recording.journal import FORMAT_VERSION, JOURNAL, JournalFiles, Writer, read_journal
from rtcontrol.recording.runinfo import (
    SETTINGS_FILE,
    RecordingError,
    describe_os_error,
    load_run_info,
    run_info,
)
from rtcontrol.scanner.volume import Timeline, Volume, clean_header

_STOP = object()

ErrorCallback = Callable[[str], None]


class Recorder:
    """Writes one run: journal + raw volumes now, BIDS at :meth:`finish`.

    ``settings`` is the run's settings (``RunSettings.to_dict()`` or a flat dict with subject,
    session, task, run, tr); it is saved with the run minus secrets and local paths.
    ``on_error`` is called (from the writer thread, or through ``loop.call_soon_threadsafe``
    when ``loop`` is given) with a message the first time each kind of disk error happens.
    """

    def __init__(
        self,
        run_dir: Path | str,
        settings: dict[str, Any],
        *,
        bids_root: Path | str | None = None,
        on_error: ErrorCallback | None = None,
        loop: Any = None,
        write: Writer = os.write,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.settings = dict(settings)
        self.bids_root = Path(bids_root) if bids_root else self.run_dir.parent / "bids"
        self.errors: list[str] = []
        self.lost = 0  # records that could not be written
        self.written_volumes = 0
        self._on_error = on_error
        self._loop = loop
        self._error_kinds: set[int | None] = set()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._finished: Path | None = None
        self._closed = False
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            existing = self.run_dir / JOURNAL
            if existing.is_file() and existing.stat().st_size:
                raise RecordingError(f"{self.run_dir} already holds a recorded run: use a new folder for each run")
            info = json.dumps(run_info(self.settings), indent=2, default=str)
            atomic_write(self.run_dir / SETTINGS_FILE, info + "\n")
            self._files = JournalFiles(self.run_dir, write=write)
        except OSError as exc:
            raise RecordingError(describe_os_error(exc, self.run_dir)) from exc
        self._thread = threading.Thread(target=self._writer, name=f"recorder {self.run_dir.name}", daemon=True)
        self._thread.start()
        self._put("line", {"type": "start", "version": FORMAT_VERSION, "rtcontrol": __version__, "t": time.monotonic()})

    # --- the hot path: each call is a queue put -----------------------------------------
    def record_volume(self, volume: Volume) -> None:
        """Queue a volume (its array is kept by reference: do not modify it in place afterwards)."""
        self._put("volume", volume, volume.timeline.to_dict(), time.monotonic())

    def record_feedback(
        self, run: str, index: int, feedback: Any, metrics: dict[str, Any] | None, timeline: Timeline | dict | None
    ) -> None:
        """Feedback for volume ``index`` with the project's metrics and the volume's timeline so far."""
        record = {
            "type": "feedback",
            "run": run,
            "index": int(index),
            "feedback": feedback,
            "metrics": dict(metrics or {}),
            "timeline": _timeline_dict(timeline),
            "t": time.monotonic(),
        }
        self._put("line", record)

    def record_timeline(self, run: str, index: int, timeline: Timeline | dict) -> None:
        """Later stamps of a volume (subject delivered, displayed); merged with earlier ones at the end."""
        self._put("line", {"type": "timeline", "run": run, "index": int(index), "timeline": _timeline_dict(timeline)})

    def record_response(self, value: Any, when: float | None = None, *, index: int | None = None, **data: Any) -> None:
        """A response from the person in the scanner (a button, a rating) at monotonic time ``when``."""
        record = {"type": "response", "value": value, "when": time.monotonic() if when is None else float(when)}
        if index is not None:
            record["index"] = int(index)
        record["data"] = data
        self._put("line", record)

    def record_event(self, kind: str, message: str, **data: Any) -> None:
        """Anything worth keeping with the run: an error, a lost link, the operator's note."""
        self._put("line", {"type": "event", "kind": kind, "message": message, "data": data, "t": time.monotonic()})

    # --- the end --------------------------------------------------------------------------
    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued and close the files (the run stays 'interrupted' until finished)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RecordingError(f"{self.run_dir}: the recorder could not write its queue within {timeout:g} s")

    def finish(self) -> Path:
        """Close the journal and write the BIDS dataset; return the bold NIfTI's path.

        Blocking (gzip of the whole run): from asyncio use :meth:`afinish`.
        """
        if self._finished is not None:
            return self._finished
        if not self._closed:
            self._put("line",
                      {"type": "event", "kind": "stop", "message": "run ended", "data": {}, "t": time.monotonic()})
        self.close()
        from rtcontrol.recording.bids import write_run

        self._finished = write_run(self.run_dir, self.bids_root)
        return self._finished

    async def afinish(self) -> Path:
        import asyncio

        return await asyncio.to_thread(self.finish)

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is on disk (tests, and before reading a live run)."""
        if self._closed:
            return  # close() already wrote everything
        done = threading.Event()
        self._queue.put(done)
        if not done.wait(timeout):
            raise RecordingError(f"{self.run_dir}: the recorder did not catch up within {timeout:g} s")

    # --- the writer thread -------------------------------------------------------------
    def _put(self, *item: Any) -> None:
        if self._closed:
            raise RecordingError(f"{self.run_dir}: the recorder is closed; start a new run to record more")
        self._queue.put(item)

    def _writer(self) -> None:
        files = self._files
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            if isinstance(item, threading.Event):
                self._sync(files)
                item.set()
                continue
            try:
                if item[0] == "volume":
                    self._write_volume(files, *item[1:])
                else:
                    files.append_line(item[1])
            except OSError as exc:
                self.lost += 1
                self._report(exc)
            except Exception as exc:  # a bug or a bad value must not stop the recording
                self.lost += 1
                self._report_message(f"could not record {item[0]}: {exc!r}", key=("bug", type(exc).__name__))
            if self._queue.empty():
                self._sync(files)
        self._sync(files)
        files.close()

    def _write_volume(self, files: JournalFiles, volume: Volume, timeline: dict, t: float) -> None:
        data = np.asarray(volume.data)
        if data.dtype.byteorder == ">":
            data = data.astype(data.dtype.newbyteorder("<"))
        record = {
            "type": "volume",
            "run": volume.run,
            "index": int(volume.index),
            "shape": list(data.shape),
            "dtype": data.dtype.str,
            "affine": volume.affine.tolist(),
            "tr": volume.tr,
            "slice_timing": list(volume.slice_timing) if volume.slice_timing is not None else None,
            "scl_slope": float(volume.scl_slope),
            "scl_inter": float(volume.scl_inter),
            "acquisition_time": volume.acquisition_time,
            "header": clean_header(volume.header),  # again: a header may have been replaced after construction
            "timeline": timeline,
            "t": t,
        }
        files.append_volume(record, data.tobytes(order="F"))
        self.written_volumes += 1

    def _sync(self, files: JournalFiles) -> None:
        try:
            files.sync()
        except OSError as exc:
            self._report(exc)

    def _report(self, exc: OSError) -> None:
        self._report_message(describe_os_error(exc, self.run_dir), key=exc.errno)

    def _report_message(self, message: str, key: Any) -> None:
        if key in self._error_kinds:
            return
        self._error_kinds.add(key)
        self.errors.append(message)
        if self._on_error is None:
            return
        try:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._on_error, message)
            else:
                self._on_error(message)
        except Exception:  # a closed loop or a failing callback must not stop the writer
            pass


def _timeline_dict(timeline: Timeline | dict | None) -> dict[str, float]:
    if timeline is None:
        return {}
    return timeline.to_dict() if isinstance(timeline, Timeline) else {k: float(v) for k, v in timeline.items()}


def find_interrupted(root: Path | str) -> list[Path]:
    """Run folders under ``root`` (one or two levels down) whose BIDS files were never written."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for journal in sorted([*root.glob(f"*/{JOURNAL}"), *root.glob(f"*/*/{JOURNAL}")]):
        try:
            if not read_journal(journal.parent).finished:
                found.append(journal.parent)
        except (OSError, ValueError):
            found.append(journal.parent)  # damaged: let the operator decide
    return found


def summarize(run_dir: Path | str) -> str:
    """One line for the operator about a run folder, e.g. to ask whether to finish an interrupted run."""
    run_dir = Path(run_dir)
    info = load_run_info(run_dir)
    run = (info.get("settings") or {}).get("run") or {}
    entities = (("sub", "subject"), ("ses", "session"), ("task", "task"), ("run", "run"))
    who = " ".join(f"{k}-{run[key]}" for k, key in entities if key in run) or run_dir.name
    try:
        journal = read_journal(run_dir)
    except (OSError, ValueError) as exc:
        return f"{who}: the journal cannot be read ({exc})"
    state = "finished" if journal.finished else "not finished"
    return f"{who}: {len(journal.volumes())} volumes recorded, started {info.get('started', '?')}, {state}"


def recover(run_dir: Path | str, bids_root: Path | str | None = None) -> Path:
    """Finish an interrupted run: write its BIDS files from the journal, and its ``summary.json`` from the
    journal too if the console could not write one at the run's end; return the bold NIfTI's path."""
    from rtcontrol.recording import summary

    run_dir = Path(run_dir)
    bold = write_run(run_dir, Path(bids_root) if bids_root else run_dir.parent / "bids", recovered=True)
    if not (run_dir / summary.SUMMARY_JSON).is_file():
        try:
            summary.write(summary.from_journal(run_dir), run_dir)
        except (OSError, ValueError) as exc:
            raise RecordingError(f"{run_dir}: the BIDS files are written but summary.json is not: {exc}") from exc
    return bold
