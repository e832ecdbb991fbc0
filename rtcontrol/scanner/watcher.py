"""Watch the scanner's export folder and turn the files that land there into ordered Volumes.

How a file travels::

    inotify thread (close-write, moved in; rtcontrol.scanner.inotify) / watchdog thread (recursive, not Linux)
    / polling thread --submit--> pool thread: reader (parse)
        --call_soon_threadsafe--> event loop: order by run --> on_volume
    retries (incomplete files) and other events: event loop --executor thread: reader--> event loop

* Event mode reacts to close-after-write (inotify ``IN_CLOSE_WRITE``, watchdog ``FileClosedEvent``) where the
  OS reports it, and to created/modified/moved events elsewhere. Polling mode (``polling=True``, for network
  shares where no events arrive) lists the folder with ``os.scandir`` every ``poll_interval`` and compares
  size and mtime.
* A file is handed over only when it parses with all its pixel bytes. ``IncompleteFile`` is retried on the
  next event for the file and on a short timer; a file that stops growing and still does not parse for
  ``incomplete_timeout`` seconds is given up with a ``gave_up`` event.
* Foreign and corrupt files are reported (``file_error``) and skipped; the run goes on.
* Runs, ordering, gaps and duplicates: :mod:`rtcontrol.scanner.runs`. One-file-per-slice series are
  assembled into volumes by ``SliceAssembler``.

Parsing never runs on the event loop nor on the thread that receives file events (one slow or hostile
file cannot delay the events of the next); the loop only does bookkeeping.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtcontrol.scanner.errors import ForeignFile, IncompleteFile, IngestError
from rtcontrol.scanner.runs import Released, RunNote, RunTracker, WatchKind
from rtcontrol.scanner.volume import SliceImage, Volume

log = logging.getLogger(__name__)

#: Polling: a file unchanged this long (s) is checked for changes only this often.
SETTLE = 1.0

#: Event mode: a created file not closed within this long (s) is tried anyway.
CLOSE_WAIT = 0.5

#: Names the watcher never reads: scanner/converter temporaries, and JSON sidecars (a scanner-side
#: converter's or the replay's: read with their NIfTI file, never as a file of their own).
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".lock", ".swp", ".crdownload", "~", ".json")


def _warm_up() -> None:
    """Import every reader now (in the pool, while nothing is waiting), not when volume 0 arrives."""
    import numpy.ma  # noqa: F401  (numpy imports it lazily on the first np.unique of floats: 10-50 ms)

    from rtcontrol.scanner import assemble, dicomfile, enhanced, mosaic, nifti_io, reader, slices  # noqa: F401


def _default_reader(path: Path) -> Any:
    from rtcontrol.scanner.reader import read_file

    return read_file(path)


@dataclass
class WatchEvent:
    """What the operator should know about.

    ``kind``: new_run, run_end, file_error (foreign or corrupt file, skipped), gave_up (never completed),
    duplicate (a volume or slice delivered again), gap (volumes missing, later ones released), late (a
    volume arriving after its gap was reported), assembly (the slice assembler dropped a slice/volume).
    """

    kind: WatchKind
    path: Path | None = None  # the file concerned, when there is one
    message: str = ""  # says what happened and where, for the operator
    run: str | None = None
    index: int | None = None
    time: float = field(default_factory=time.monotonic)


@dataclass
class WatchStats:
    files_seen: int = 0
    volumes_emitted: int = 0
    errors: int = 0
    duplicates: int = 0
    detected_format: str | None = None
    series: list[str] = field(default_factory=list)
    last_volume_time: float | None = None


@dataclass
class _FileState:
    first_seen: float
    size: int = -1
    mtime_ns: int = -1
    changed_at: float = 0.0  # when size/mtime last changed (for the give-up clock)
    busy: bool = False  # a parse is in flight
    again: bool = False  # another event came while parsing
    done: bool = False  # parsed, or given up on / reported, for this size+mtime
    retry: asyncio.TimerHandle | None = None
    error: str = ""


class ScanWatcher:
    """Watches ``folder`` and calls ``on_volume`` with each complete Volume, in acquisition order per run."""

    def __init__(
        self,
        folder: Path | str,
        on_volume: Callable[[Volume], None],
        on_event: Callable[[WatchEvent], None] | None = None,
        *,
        polling: bool = False,
        poll_interval: float = 0.01,
        reader: Callable[[Path], Any] = _default_reader,
        incomplete_timeout: float = 5.0,
        retry_interval: float = 0.05,
        gap_timeout: float = 2.0,
        existing: bool = False,
        recursive: bool = False,
    ) -> None:
        self.folder = Path(folder).absolute()  # event paths are compared with it
        self.on_volume = on_volume
        self.on_event = on_event
        self.polling = polling
        self.poll_interval = poll_interval
        self.reader = reader
        self.incomplete_timeout = incomplete_timeout
        self.retry_interval = retry_interval
        self.existing = existing
        self.recursive = recursive  # scanners that write each series into a new sub-folder (GE)
        self.stats = WatchStats()
        self.runs = RunTracker(gap_timeout)
        self._files: dict[Path, _FileState] = {}
        self._assemblers: dict[str, Any] = {}
        self._slice_keys: set[tuple] = set()
        self._slice_seen: dict[tuple[str, int], float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._observer: Any = None
        self._direct: Any = None  # FolderEvents: this folder's events straight from inotify
        self._poller: threading.Thread | None = None
        self._stopping = threading.Event()
        self._gap_timer: asyncio.TimerHandle | None = None
        self._close_events = False
        self._inflight: set[asyncio.Future] = set()
        self._fast_inflight: set[Any] = set()  # pool parses started from event/polling threads
        self._fast_paths: dict[Path, bool] = {}  # files being parsed so -> another event came meanwhile
        self._fast_lock = threading.Lock()
        self.running = False

    # ---- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        if self.running:
            return
        if not self.folder.is_dir():
            raise FileNotFoundError(f"watch folder {self.folder} does not exist or is not a folder")
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rtcontrol-ingest")
        self._executor.submit(_warm_up)  # the run's first volume must not pay for the readers' imports
        self._stopping.clear()
        self.running = True
        now = time.monotonic()
        for path, size, mtime_ns in sorted(self._list(), key=lambda e: (e[2], e[0].name)):  # oldest first
            if self.existing:
                self._notice(path, now)
            else:  # already there: not part of this session unless it changes
                self._files[path] = _FileState(now, size, mtime_ns, now, done=True)
        if self.polling:
            self._poller = threading.Thread(target=self._poll_loop, name="rtcontrol-poll", daemon=True)
            self._poller.start()
        else:
            self._start_observer()

    async def stop(self) -> None:
        """Stop watching, finish parses in flight, assemble what is left and release held volumes."""
        if not self.running:
            return
        self.running = False
        self._stopping.set()
        if self._direct is not None:
            direct, self._direct = self._direct, None
            await asyncio.to_thread(direct.stop)
        if self._observer is not None:
            observer, self._observer = self._observer, None
            await asyncio.to_thread(lambda: (observer.stop(), observer.join(2.0)))
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join, 2.0)
            self._poller = None
        for state in self._files.values():
            if state.retry is not None:
                state.retry.cancel()
        deadline = time.monotonic() + 5.0
        with self._fast_lock:
            fast = list(self._fast_inflight)
        if fast:
            await asyncio.to_thread(concurrent.futures.wait, fast, 5.0)
            await asyncio.sleep(0)  # let the results they posted run
        while self._inflight and time.monotonic() < deadline:
            await asyncio.wait(list(self._inflight), timeout=max(0.01, deadline - time.monotonic()))
            await asyncio.sleep(0)  # let their done-callbacks run
        if self._gap_timer is not None:
            self._gap_timer.cancel()
        now = time.monotonic()
        released = Released()
        for assembler in self._assemblers.values():
            known = len(assembler.problems)
            for volume in assembler.flush():
                self._stamp_assembled(volume, now)
                released.extend(self.runs.add(volume, now))
            self._assembly_problems(assembler, known)
        released.extend(self.runs.flush(now))
        self._deliver(released)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def __aenter__(self) -> ScanWatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- sources of file events ----------------------------------------------------------------
    def _start_observer(self) -> None:
        assert self._loop is not None
        if not self.recursive:  # Linux: one thread on inotify, no watchdog layers (see .inotify)
            from rtcontrol.scanner.inotify import FolderEvents

            loop = self._loop
            direct = FolderEvents(self.folder, self._complete_file,
                                  lambda kind, path, t: loop.call_soon_threadsafe(self._fs_event, kind, path, t),
                                  lambda: loop.call_soon_threadsafe(self._rescan))
            if direct.start():
                self._direct, self._close_events = direct, True
                return
        self._start_watchdog()

    def _complete_file(self, path: Path, t: float) -> None:
        """From the inotify thread: ``path`` was closed after writing, or renamed in whole: read it now."""
        if self._wanted(path):
            self._read_async(path, t)

    def _rescan(self) -> None:
        """File events were lost (the kernel's queue overflowed): look at every file whose size or time changed."""
        if not self.running:
            return
        now = time.monotonic()
        for path, size, mtime_ns in sorted(self._list(), key=lambda e: (e[2], e[0].name)):
            state = self._files.get(path)
            if state is None or (state.size, state.mtime_ns) != (size, mtime_ns):
                self._notice(path, now)

    def _start_watchdog(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        assert self._loop is not None
        watcher, loop = self, self._loop

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                if event.is_directory:
                    return
                t = time.monotonic()
                kind = event.event_type
                path = event.src_path
                if kind == "moved":  # renamed into place: the new name is the file
                    path = event.dest_path
                path = Path(os.fsdecode(path))
                if kind in ("closed", "moved") and watcher._close_events and watcher._wanted(path):
                    # the file is complete now: parse it in the pool straight from this (watchdog) thread
                    # and hand the result to the loop (one thread hop fewer than through the loop); never
                    # here, so one slow file cannot hold back the events of the next
                    watcher._read_async(path, t)
                elif kind in ("created", "modified", "attrib", "moved", "closed"):  # attrib: touched
                    loop.call_soon_threadsafe(watcher._fs_event, kind, path, t)
                    if kind == "created" and watcher._close_events and watcher._wanted(path) and _has_bytes(path):
                        # renamed in from another folder (how many exporters and DICOM receivers deliver):
                        # inotify reports a creation with no close to follow; a file that appears with
                        # bytes is read at once (a half-written one fails as incomplete and waits)
                        watcher._read_async(path, t)

        self._observer = Observer()
        # inotify reports close-after-write: wait for it rather than parsing half-written files
        self._close_events = type(self._observer).__name__ == "InotifyObserver"
        self._observer.schedule(Handler(), str(self.folder), recursive=self.recursive)
        self._observer.start()

    def _poll_loop(self) -> None:
        """Polling thread: list the folder, try files whose size or mtime changed.

        A file unchanged for :data:`SETTLE` seconds is stat'ed only once per SETTLE (a run leaves
        thousands of files in the folder; stat'ing each every 10 ms would cost a core). Listing the
        names each time is cheap and finds new files at once.
        """
        loop = self._loop
        assert loop is not None
        known: dict[str, list] = {str(p): [s.size, s.mtime_ns, -SETTLE] for p, s in self._files.items()}
        last_full = time.monotonic()
        while not self._stopping.wait(self.poll_interval):
            now = time.monotonic()
            full = now - last_full >= SETTLE
            if full:
                last_full = now
            changed = []
            try:
                for entry in self._entries():
                    name = entry.path
                    k = known.get(name)
                    if k is not None and not full and now - k[2] >= SETTLE:
                        continue
                    try:
                        st = entry.stat()
                    except OSError:
                        continue
                    if k is None or k[0] != st.st_size or k[1] != st.st_mtime_ns:
                        known[name] = [st.st_size, st.st_mtime_ns, now]
                        changed.append((st.st_mtime_ns, name, st.st_size))
            except OSError as exc:  # share went away for a moment: say so, keep trying
                log.warning("cannot list %s: %s", self.folder, exc)
                continue
            t = time.monotonic()
            # oldest change first: the order the scanner wrote them in (directory order is arbitrary)
            for _, name, size in sorted(changed):
                path = Path(name)
                if size == 0:  # created, nothing written yet
                    loop.call_soon_threadsafe(self._fs_event, "polled", path, t)
                    continue
                # try it now, in the pool: complete files go straight to the loop; a file still being
                # written fails cheaply as incomplete and is retried
                self._read_async(path, t)

    def _entries(self) -> Iterator[os.DirEntry]:
        """Files in the folder (and its sub-folders when recursive), without hidden and temporary names."""
        folders = [self.folder]
        while folders:
            with os.scandir(folders.pop()) as it:
                for entry in it:
                    name = entry.name
                    if name.startswith(".") or name.endswith(IGNORED_SUFFIXES):
                        continue
                    try:
                        if entry.is_file():
                            yield entry
                        elif self.recursive and entry.is_dir(follow_symlinks=False):
                            folders.append(Path(entry.path))
                    except OSError:
                        continue

    def _list(self) -> list[tuple[Path, int, int]]:
        out = []
        for entry in self._entries():
            try:
                st = entry.stat()
            except OSError:
                continue
            out.append((Path(entry.path), st.st_size, st.st_mtime_ns))
        return out

    # ---- on the loop: per-file state machine ---------------------------------------------------
    def _wanted(self, path: Path) -> bool:
        if path.name.startswith(".") or path.name.endswith(IGNORED_SUFFIXES):
            return False
        if path.parent == self.folder:
            return True
        if not self.recursive or self.folder not in path.parents:
            return False
        return not any(part.startswith(".") for part in path.relative_to(self.folder).parts)

    def _fs_event(self, kind: str, path: str | Path, t: float) -> None:
        if not self.running:
            return
        path = Path(path)
        if not self._wanted(path):
            return
        if kind in ("created", "modified", "attrib") and self._close_events:
            old = self._files.get(path)
            state = self._seen(path, t)  # the close event will follow: note the time, do not parse yet
            if old is not None and old.done and state is not old and self.running:
                # a finished file changed: rewritten (a close will come) or only touched (none will):
                # look again shortly either way
                state.retry = self._loop.call_later(self.retry_interval, self._retry, path, state)  # type: ignore[union-attr]
            elif old is None and state.retry is None and self.running:
                # safety net for a close we never see (a writer that keeps the file open, or a file closed
                # in a new sub-folder before its watch was set up): try it anyway after a while
                state.retry = self._loop.call_later(CLOSE_WAIT, self._retry, path, state)  # type: ignore[union-attr]
            return
        self._notice(path, t)

    def _seen(self, path: Path, t: float) -> _FileState:
        state = self._files.get(path)
        if state is None or (state.done and kind_changed(path, state)):
            state = _FileState(first_seen=t, changed_at=t)
            self._files[path] = state
            self.stats.files_seen += 1
        return state

    def _notice(self, path: Path, t: float) -> None:
        state = self._seen(path, t)
        if state.busy:
            state.again = True
            return
        self._parse(path, state, t)

    def _parse(self, path: Path, state: _FileState, trigger: float) -> None:
        if state.retry is not None:
            state.retry.cancel()
            state.retry = None
        try:
            st = path.stat()
        except FileNotFoundError:  # removed again (a scanner's temporary): forget it
            self._files.pop(path, None)
            return
        if (st.st_size, st.st_mtime_ns) != (state.size, state.mtime_ns):
            # it changed: restart the give-up clock (a slow writer is not a stalled one)
            state.size, state.mtime_ns, state.changed_at = st.st_size, st.st_mtime_ns, trigger
            state.done = False
        elif state.done:
            return  # nothing new about this file
        with self._fast_lock:  # one parse per file at a time, whichever side starts it (see _read_async)
            if path in self._fast_paths:  # a parse started from an event or polling thread is reading it
                self._fast_paths[path] = True  # it reads again if it finds the file incomplete
                return
            self._fast_paths[path] = False  # an event or poll meanwhile marks this parse instead of starting one
        state.busy = True
        assert self._loop is not None and self._executor is not None
        fut = self._loop.run_in_executor(self._executor, self._read, path)
        self._inflight.add(fut)
        fut.add_done_callback(lambda f: self._parsed(path, state, trigger, f))

    def _read(self, path: Path) -> tuple[Any, BaseException | None, float, tuple[int, int] | None]:
        """In the executor: parse, then stat. Stat *after* reading, so a file that was still growing when
        the event came but complete when read is not read a second time for the same bytes."""
        error: BaseException | None
        try:
            if os.stat(path).st_size == 0:  # just created, nothing written yet: not an error
                raise IncompleteFile(path, "empty so far (0 bytes)")
            result, error = self.reader(path), None
        except FileNotFoundError:
            result, error = None, IncompleteFile(path, "file vanished before it could be read")
        except Exception as exc:
            result, error = None, exc
        parsed_at = time.monotonic()
        try:
            st = os.stat(path)
            sig = (st.st_size, st.st_mtime_ns)
        except OSError:
            sig = None
        return result, error, parsed_at, sig

    def _read_async(self, path: Path, t: float) -> None:
        """From an event or polling thread: parse ``path`` in the pool, then hand the result to the loop.

        One parse per file at a time, from either side (a creation and a close of the same file, or a poll
        and the loop's parse of a file first seen empty, must not take both pool threads: one slow file would
        hold back the next); an event during a parse that found the file incomplete parses it again at once."""
        executor, loop = self._executor, self._loop
        if executor is None or loop is None or self._stopping.is_set():
            return
        with self._fast_lock:
            if path in self._fast_paths:
                self._fast_paths[path] = True  # look again when this parse ends
                return
            self._fast_paths[path] = False
        try:
            fut = executor.submit(self._read, path)
        except RuntimeError:  # the pool shut down: stopping
            with self._fast_lock:
                self._fast_paths.pop(path, None)
            return
        with self._fast_lock:
            self._fast_inflight.add(fut)

        def done(f: Any) -> None:
            with self._fast_lock:
                self._fast_inflight.discard(f)
                again = self._fast_paths.pop(path, False)
            if f.cancelled() or loop.is_closed():
                return
            packed = f.result()
            if again and isinstance(packed[1], IncompleteFile):
                self._read_async(path, t)  # it changed while we read a part of it: read the rest now
                return
            try:
                loop.call_soon_threadsafe(self._fast_result, path, t, packed)
            except RuntimeError:  # the loop closed meanwhile
                pass

        fut.add_done_callback(done)

    def _fast_result(self, path: Path, t: float, packed: tuple) -> None:
        """A close-write event whose file was already parsed in the watchdog thread."""
        self._handle(path, self._seen(path, t), t, packed)

    def _parsed(self, path: Path, state: _FileState, trigger: float, fut: asyncio.Future) -> None:
        self._inflight.discard(fut)
        state.busy = False
        with self._fast_lock:
            if self._fast_paths.pop(path, False):
                state.again = True  # an event or poll came while it was read
        self._handle(path, state, trigger, fut.result())

    def _handle(self, path: Path, state: _FileState, trigger: float, packed: tuple) -> None:
        result, error, parsed_at, sig = packed
        now = time.monotonic()
        if state.done and sig == (state.size, state.mtime_ns):
            return  # these very bytes were dealt with already (two parses raced): nothing new
        if sig is not None and sig != (state.size, state.mtime_ns):
            state.size, state.mtime_ns, state.changed_at = sig[0], sig[1], now
        if isinstance(error, IncompleteFile):
            state.error = error.reason
            if state.retry is not None:
                state.retry.cancel()
                state.retry = None
            if now - state.changed_at >= self.incomplete_timeout:
                state.done = True
                message = (f"{path.name}: still incomplete {now - state.changed_at:.1f} s after it "
                           f"last changed, giving up: {error.reason}")
                self._report(WatchKind.GAVE_UP, message, path)
            elif state.again:
                state.again = False
                self._parse(path, state, now)
            elif self.running:
                state.retry = self._loop.call_later(self.retry_interval, self._retry, path, state)  # type: ignore[union-attr]
            return
        if error is not None:
            self._failed(path, state, error, now)
            return
        state.done = True
        self._accept(result, path, state, trigger, parsed_at)
        self._maybe_again(path, state, now)

    def _failed(self, path: Path, state: _FileState, error: BaseException, now: float) -> None:
        state.done = True
        if isinstance(error, IngestError):
            kind = "foreign" if isinstance(error, ForeignFile) else "corrupt"
            self._report(WatchKind.FILE_ERROR, f"{path.name}: {kind} file skipped: {error.reason}", path)
        else:  # a reader bug must not stop the run
            log.error("reader failed on %s", path, exc_info=error)
            message = f"{path.name}: could not be read ({type(error).__name__}: {error})"
            self._report(WatchKind.FILE_ERROR, message, path)
        self._maybe_again(path, state, now)

    def _maybe_again(self, path: Path, state: _FileState, now: float) -> None:
        if state.again:  # it changed while we were reading it
            state.again = False
            self._parse(path, state, now)

    def _retry(self, path: Path, state: _FileState) -> None:
        state.retry = None
        if self.running and not state.busy and not state.done:
            self._parse(path, state, time.monotonic())

    # ---- results -------------------------------------------------------------------------------
    def _accept(self, result: Any, path: Path, state: _FileState, complete: float, parsed: float) -> None:
        released = Released()
        now = time.monotonic()
        items = result if isinstance(result, list) else [result]
        for item in items:
            if isinstance(item, Volume):
                item.source = item.source or str(path)
                self._stamp(item, state.first_seen, complete, parsed)
                released.extend(self.runs.add(item, now, str(path)))
            elif isinstance(item, SliceImage):
                released.extend(self._add_slice(item, state, complete, parsed, now))
            else:
                self._report(WatchKind.FILE_ERROR, f"{path.name}: reader returned {type(item).__name__}", path)
        self._deliver(released)
        self._arm_gap_timer()

    def _add_slice(self, s: Any, state: _FileState, complete: float, parsed: float, now: float) -> Released:
        key = (s.series_uid, s.temporal_index, round(float(s.slice_position), 3), s.acquisition_time)
        if key in self._slice_keys:
            self.stats.duplicates += 1
            self._report(WatchKind.DUPLICATE, f"{s.path.name}: slice at {s.slice_position:.2f} mm of volume "
                         f"{s.temporal_index} delivered again: ignored", s.path)  # fmt: skip
            return Released()
        self._slice_keys.add(key)
        vkey = (s.series_uid, s.temporal_index)
        self._slice_seen[vkey] = min(self._slice_seen.get(vkey, state.first_seen), state.first_seen)
        assembler = self._assemblers.get(s.series_uid)
        if assembler is None:
            from rtcontrol.scanner.assemble import SliceAssembler

            assembler = self._assemblers[s.series_uid] = SliceAssembler()
        out = Released()
        known = len(assembler.problems)
        for volume in assembler.add(s):
            self._stamp_assembled(volume, now, complete, parsed)
            out.extend(self.runs.add(volume, now))
        self._assembly_problems(assembler, known)
        return out

    def _assembly_problems(self, assembler: Any, known: int) -> None:
        """Pass on what the slice assembler had to drop or ignore (lost slices, given-up volumes)."""
        for message in assembler.problems[known:]:
            self._report(WatchKind.ASSEMBLY, message)

    def _stamp_assembled(self, volume: Volume, now: float, complete: float | None = None,
                         parsed: float | None = None) -> None:  # fmt: skip
        seen = self._slice_seen.pop((volume.series_uid, volume.index), None)
        self._stamp(volume, seen if seen is not None else now, complete or now, parsed or now)

    @staticmethod
    def _stamp(volume: Volume, seen: float, complete: float, parsed: float) -> None:
        tl = volume.timeline
        tl.stamp("file_seen", min(seen, complete))
        tl.stamp("file_complete", complete)
        tl.stamp("parsed", max(parsed, complete))

    def _deliver(self, released: Released) -> None:
        for note in released.notes:
            self._note(note)
        for volume in released.volumes:
            self.stats.volumes_emitted += 1
            self.stats.last_volume_time = time.monotonic()
            fmt = volume.header.get("SourceFormat")
            if fmt:
                self.stats.detected_format = fmt
            try:
                self.on_volume(volume)
            except Exception:  # the consumer's bug must not stop ingest
                log.exception("on_volume failed for %s volume %d", volume.run, volume.index)

    def _note(self, note: RunNote) -> None:
        if note.kind == WatchKind.REFUSED:  # a volume that does not fit its run: an error about its file
            path = Path(note.source) if note.source else None
            self._report(WatchKind.FILE_ERROR, note.message, path, note.run, note.index)
            return
        if note.kind == WatchKind.NEW_RUN:
            self.stats.series.append(note.run)
        if note.kind == WatchKind.DUPLICATE:
            self.stats.duplicates += 1
        self._report(note.kind, note.message, None, note.run, note.index)

    def _report(self, kind: WatchKind, message: str, path: Path | None = None, run: str | None = None,
                index: int | None = None) -> None:  # fmt: skip
        if kind in (WatchKind.FILE_ERROR, WatchKind.GAVE_UP, WatchKind.ASSEMBLY):
            self.stats.errors += 1
        event = WatchEvent(kind, path=path, message=message, run=run, index=index)
        loud = kind in (WatchKind.FILE_ERROR, WatchKind.GAVE_UP, WatchKind.GAP) and self.on_event is None
        (log.warning if loud else log.info)("%s", message)  # with a consumer, it says it (once, not twice)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("on_event failed for %s", kind)

    def _arm_gap_timer(self) -> None:
        deadline = self.runs.next_deadline()
        if self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None
        if deadline is not None and self.running and self._loop is not None:
            self._gap_timer = self._loop.call_at(
                self._loop.time() + max(0.0, deadline - time.monotonic()), self._expire_gaps
            )

    def _expire_gaps(self) -> None:
        self._gap_timer = None
        now = time.monotonic()
        released = self.runs.expire(now)
        self._deliver(released)
        gaps = {n.run for n in released.notes if n.kind == WatchKind.GAP}
        if gaps:
            waits = [self.runs.wait(r) for r in self.runs.runs.values() if r.run_id in gaps]
            self._give_up_stalled(now, min(waits) if waits else self.runs.gap_timeout)
        self._arm_gap_timer()

    def _give_up_stalled(self, now: float, stalled_for: float) -> None:
        """A gap was just passed over: a file still incomplete and unchanged for about as long as the gap
        was waited for (half of it: it was written before the volume that was held) is most likely the
        missing volume, cut short. Say so now, naming it, rather than after
        ``incomplete_timeout`` (if it grows again it is read again and still handed on, late)."""
        for path, state in list(self._files.items()):
            if state.done or not state.error or now - state.changed_at < stalled_for / 2:
                continue
            if state.retry is not None:
                state.retry.cancel()
                state.retry = None
            state.done = True
            message = (f"{path.name}: still incomplete {now - state.changed_at:.1f} s after it last "
                       f"changed while later volumes went on (the missing volume?): {state.error}")
            self._report(WatchKind.GAVE_UP, message, path)


def _has_bytes(path: Path) -> bool:
    try:
        return os.stat(path).st_size > 0
    except OSError:
        return False


def kind_changed(path: Path, state: _FileState) -> bool:
    """Whether a file already dealt with has changed on disk since (rewritten or touched)."""
    try:
        st = path.stat()
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) != (state.size, state.mtime_ns)
