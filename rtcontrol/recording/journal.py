"""The run journal on disk: JSON lines plus a raw file of volume bytes, written so a crash loses nothing.

Layout of a run folder::

    journal.jsonl   one JSON object per line ("type": start, volume, feedback, timeline, response, event, finish)
    volumes.raw     every volume's bytes, appended; its journal line gives offset, nbytes, dtype, shape

Durability: a volume's bytes are written and synced (``fdatasync``) *before* its journal line, and the
line is synced after it, so a journal line never refers to bytes that a power cut could lose. Other
lines are synced when the writer's queue runs empty. A crash mid-line leaves at most one torn last
line, which :func:`read_journal` drops. After a failed write (a full disk) both files are cut back to
their last whole record, so the journal stays readable and later records still append cleanly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

JOURNAL = "journal.jsonl"
RAW = "volumes.raw"
FORMAT_VERSION = 1

Writer = Callable[[int, memoryview], int]

_sync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


def encode_line(record: dict[str, Any]) -> bytes:
    """One journal line: compact JSON, non-finite floats as null (JSON has no NaN)."""
    return (json.dumps(_json_safe(record), separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


class JournalFiles:
    """Append-only writer of one run's journal and raw volume file (used from one thread only)."""

    def __init__(self, run_dir: Path, write: Writer = os.write) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write = write
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0)
        self._journal = os.open(self.run_dir / JOURNAL, flags, 0o644)
        self._raw = os.open(self.run_dir / RAW, flags, 0o644)
        self.journal_size = os.fstat(self._journal).st_size
        self.raw_size = os.fstat(self._raw).st_size
        self._dirty = False

    def append_line(self, record: dict[str, Any]) -> None:
        """Append one record; on failure cut the journal back to its last whole line and re-raise."""
        line = encode_line(record)
        try:
            self._write_all(self._journal, line)
        except OSError:
            self._truncate(self._journal, self.journal_size)
            raise
        self.journal_size += len(line)
        self._dirty = True

    def append_volume(self, record: dict[str, Any], data: bytes | memoryview) -> None:
        """Append a volume's bytes, sync them, then its journal line (with offset/nbytes) and sync that."""
        offset = self.raw_size
        try:
            self._write_all(self._raw, data)
            _sync(self._raw)
        except OSError:
            self._truncate(self._raw, offset)
            raise
        self.raw_size = offset + len(data)
        self.append_line({**record, "offset": offset, "nbytes": len(data)})
        self.sync()

    def sync(self) -> None:
        if self._dirty:
            _sync(self._journal)
            self._dirty = False

    def close(self) -> None:
        for fd in (self._journal, self._raw):
            try:
                _sync(fd)
            except OSError:
                pass
            os.close(fd)

    def _write_all(self, fd: int, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            n = self._write(fd, view)
            view = view[n:]

    @staticmethod
    def _truncate(fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
        except OSError:
            pass  # nothing more we can do; the reader drops a torn last line anyway


@dataclass
class JournalContents:
    """What a run folder holds, as read back (possibly after a crash)."""

    run_dir: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    torn_tail: bool = False  # the last line was cut short (a crash mid-write)
    raw_size: int = 0

    def of_type(self, kind: str) -> Iterator[dict[str, Any]]:
        return (r for r in self.records if r.get("type") == kind)

    @property
    def start(self) -> dict[str, Any]:
        return next(self.of_type("start"), {})

    @property
    def finished(self) -> bool:
        return any(True for _ in self.of_type("finish"))

    def volumes(self) -> list[dict[str, Any]]:
        """Volume records whose bytes are all in the raw file, last one per index."""
        by_index: dict[int, dict[str, Any]] = {}
        for r in self.of_type("volume"):
            if r["offset"] + r["nbytes"] <= self.raw_size:
                by_index[int(r["index"])] = r
        return [by_index[i] for i in sorted(by_index)]

    def volume_data(self, record: dict[str, Any]) -> np.ndarray:
        """The voxel array of one volume record, read from the raw file (stored values, (i, j, k))."""
        dtype = np.dtype(record["dtype"])
        with open(self.run_dir / RAW, "rb") as fh:
            fh.seek(record["offset"])
            buf = fh.read(record["nbytes"])
        return np.frombuffer(buf, dtype=dtype).reshape(record["shape"], order="F")


def append_record(run_dir: Path | str, record: dict[str, Any]) -> None:
    """Append one record to a closed run's journal (e.g. 'finish'), first cutting off a torn last line."""
    path = Path(run_dir) / JOURNAL
    with open(path, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size:
            fh.seek(max(0, size - 65536))
            tail = fh.read()
            if not tail.endswith(b"\n"):
                cut = tail.rfind(b"\n")
                fh.truncate(size - len(tail) + cut + 1 if cut >= 0 else (0 if size <= 65536 else size))
        fh.seek(0, os.SEEK_END)
        fh.write(encode_line(record))
        fh.flush()
        os.fsync(fh.fileno())


def read_journal(run_dir: Path | str) -> JournalContents:
    """Read a run folder's journal, tolerating a torn last line; a bad line elsewhere is an error."""
    run_dir = Path(run_dir)
    path = run_dir / JOURNAL
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {JOURNAL} here; is this a rtcontrol run folder?")
    raw = run_dir / RAW
    out = JournalContents(run_dir, raw_size=raw.stat().st_size if raw.is_file() else 0)
    lines = path.read_bytes().split(b"\n")
    last = len(lines) - 1
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.records.append(json.loads(line))
        except ValueError:
            if number == last:  # no newline after it: written partly when the program stopped
                out.torn_tail = True
                continue
            raise ValueError(f"{path}, line {number + 1}: not a JSON record (the journal is damaged)") from None
    return out
