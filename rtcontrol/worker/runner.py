"""The worker's side of one run process: start it, feed it volumes one at a time, watch it.

A crash (the process exits), an exception (it reports the traceback), an endless loop (no
result within ``volume_timeout``) or memory over ``memory_limit`` stops only this run: the
process is killed if needed and ``on_event("run_failed", ...)`` tells the session, which tells
the console. Nothing here blocks the worker's event loop.

Memory is watched from the worker, by the run process's resident memory (``/proc/PID/statm``,
sampled every :data:`MEMORY_POLL` seconds), not by ``RLIMIT_AS`` in the child: address space
counts what is reserved, not used (glibc's 64 MiB malloc arenas per thread, BLAS thread
buffers, thread stacks, a Dask client's threads), so a limit on it stops healthy numpy runs long
before they use the memory, and its failures surface as MemoryError at random places. Resident
memory is what a project that keeps data per volume actually grows. Only the run process is
counted (a Dask cluster's worker processes are separate and have their own limits). Linux
only: elsewhere there is no ``/proc`` and the limit is not enforced (said once in the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtcontrol.errors import RtcontrolError
from rtcontrol.worker.pipe import JSON, MAP, MAX_MAPS, SharedFrame, pack_json, read_frame, volume_head
from rtcontrol.worker.store import RunStore

log = logging.getLogger(__name__)

#: ``on_event(kind, fields)``: run_ready, result, log, subject, run_failed, run_ended.
EventSink = Callable[[str, dict[str, Any]], None]
#: ``files(op, path, data) -> result``; raises PermissionError/FileNotFoundError/OSError.
FilesHandler = Callable[[str, str, str | None], Awaitable[Any]]

_STOP = object()
PIPE_SIZE = 1 << 20
#: Seconds between two looks at a run process's resident memory.
MEMORY_POLL = 0.1
#: What the worker's flag is called, named in the message that stops a run.
MEMORY_FLAG = "--run-memory-limit"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_UNITS = {"": 2**20, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}
#: The shared-memory slot a run process gets for its volumes (larger ones go through the pipe).
SHM_SIZE = 64 * 1024 * 1024
#: ``memory_limit`` meaning "half the machine's memory" (:func:`default_memory_limit`).
AUTO_MEMORY = -1
_warned_no_proc = False


def machine_memory() -> int | None:
    """Memory this worker can have in bytes: the machine's, or its container's (cgroup) limit if
    lower; None where the system does not say."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return min([total, *_cgroup_limits()])


def _cgroup_limits() -> list[int]:
    """Memory limits of our cgroup (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``), where set."""
    paths = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::/") and len(line) > 4:
                paths.insert(0, f"/sys/fs/cgroup{line[3:]}/memory.max")
    except OSError:
        pass
    limits = []
    for path in paths:
        try:
            limits.append(int(Path(path).read_text().strip()))
        except (OSError, ValueError):  # absent, or "max"
            pass
    return [n for n in limits if 0 < n]


def default_memory_limit() -> int | None:
    """Half of the machine's memory for one run: the worker allows one run per console session and
    sets no cap on sessions, and one console per worker is the usual set-up (with more, the operator
    sets ``--run-memory-limit`` to half the memory divided by the runs at once)."""
    total = machine_memory()
    return None if total is None else total // 2


def parse_memory(text: str) -> int | None:
    """``2048`` (MB), ``512M``, ``2GB``, ``1.5g`` -> bytes; ``0``/``off``/``none`` -> None (no limit)."""
    raw = str(text).strip().lower().replace(" ", "")
    if raw in ("0", "off", "none", "unlimited"):
        return None
    num = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(num):]
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"{text!r} is not a memory size: give megabytes (2048) or a unit (512MB, 2GB), "
                         "or 0 for no limit")
    return int(value * _UNITS[unit])


def format_mb(nbytes: int) -> str:
    return f"{nbytes / 2**20:.0f} MB"


def resident_memory(pid: int) -> int | None:
    """Resident memory of a process in bytes, from ``/proc`` (None if unknown or gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class RunFailed(RtcontrolError):
    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback


class RunProcess:
    def __init__(
        self,
        *,
        project: str,
        project_dir: Path,
        run: str,
        settings: dict[str, Any],
        tr: float | None,
        store: RunStore,
        on_event: EventSink,
        files: FilesHandler,
        volume_timeout: float = 30.0,
        start_timeout: float = 60.0,
        shm_size: int = SHM_SIZE,
        memory_limit: int | None = AUTO_MEMORY,
        dask_scheduler: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        """``memory_limit`` in bytes; None for no limit, :data:`AUTO_MEMORY` for :func:`default_memory_limit`."""
        self.project, self.project_dir, self.run = project, project_dir, run
        self.settings, self.tr, self.store = settings, tr, store
        self.on_event, self.files = on_event, files
        self.volume_timeout, self.start_timeout = volume_timeout, start_timeout
        self.memory_limit = default_memory_limit() if memory_limit == AUTO_MEMORY else memory_limit
        self.peak_memory = 0
        self._killed = False
        self.shm_size = usable_shm_size(shm_size)
        self._shm: SharedFrame | None = None
        self.state = "starting"  # starting, running, stopping, ended, failed
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.processed = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._result: asyncio.Future[dict[str, Any]] | None = None
        self._maps: list[bytes] = []  # map frames of the volume being processed (they come before its result)
        self._ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._done = asyncio.Event()
        self._stderr_tail: deque[str] = deque(maxlen=30)
        self._tasks: list[asyncio.Task] = []
        self._error: dict[str, Any] | None = None
        self.design: dict[str, Any] | None = None
        self.dask_scheduler = dask_scheduler  # the worker's cluster address, asked for by ctx.map/submit

    # ----------------------------------------------------------------- lifecycle

    async def start(self, spare: SpareProcess | None = None) -> dict[str, Any]:
        """Spawn the process (or take ``spare``'s), wait until the project is loaded; returns the resolved
        settings."""
        spawned = await spare.take(self.shm_size) if spare is not None else await spawn(self.shm_size)
        self.proc, self._shm = spawned.proc, spawned.shm
        self._tasks = [
            asyncio.create_task(self._read_stdout(), name=f"run {self.run} stdout"),
            asyncio.create_task(self._read_stderr(), name=f"run {self.run} stderr"),
        ]
        if self.memory_limit:
            self._tasks.append(asyncio.create_task(self._watch_memory(), name=f"run {self.run} memory"))
        (self.store.dir / "output").mkdir(exist_ok=True)
        await self._write(pack_json({
            "k": "init", "project_dir": str(self.project_dir), "run": self.run,
            "settings": self.settings, "tr": self.tr, "output_dir": str(self.store.dir / "output"),
        }))
        try:
            ready = await asyncio.wait_for(asyncio.shield(self._ready), self.start_timeout)
        except TimeoutError:
            await self._fail(f"project {self.project!r} did not start within {self.start_timeout:.0f} s", "start")
            raise RunFailed(self._error["message"]) from None  # type: ignore[index]
        except RunFailed:
            raise
        self.state = "running"
        self.design = ready.get("design")  # the project's blocks (Design.to_dict) or None, for the console
        self.store.save_settings({"project": self.project, "run": self.run, "tr": self.tr,
                                  "settings": ready["settings"], "project_dir": str(self.project_dir)})
        self._tasks.append(asyncio.create_task(self._feed(), name=f"run {self.run} feeder"))
        return ready["settings"]

    def submit(self, frame: bytes, index: int, meta: dict[str, Any]) -> None:
        """Queue a volume frame (already validated) for the project, in arrival order."""
        self.queue.put_nowait((frame, index, meta))

    def respond(self, response: dict[str, Any]) -> None:
        self.queue.put_nowait(("response", response))

    async def stop(self, timeout: float | None = None) -> None:
        """Process what is queued, call ``end_run`` and wait for the process to end."""
        if self.state in ("ended", "failed"):
            return
        self.queue.put_nowait(_STOP)
        timeout = timeout if timeout is not None else self.volume_timeout * (self.queue.qsize() + 1) + 10
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except TimeoutError:
            await self._fail(f"the run did not end within {timeout:.0f} s after stop", "end_run")

    async def kill(self) -> None:
        self._killed = True
        if self.proc and self.proc.returncode is None:
            _kill(self.proc)
            await self.proc.wait()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._done.set()
        self.store.close()
        if self._shm is not None:
            self._shm.close()
            self._shm = None

    # ----------------------------------------------------------------- internals

    async def _write(self, data: bytes, payload: bytes | memoryview | None = None) -> None:
        assert self.proc and self.proc.stdin
        self.proc.stdin.write(data)
        if payload is not None:
            self.proc.stdin.write(payload)
        await self.proc.stdin.drain()

    async def _feed(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await self.queue.get()
            try:
                if item is _STOP:
                    self.state = "stopping"
                    await self._write(pack_json({"k": "stop"}))
                    return
                if item[0] == "response":
                    await self._write(pack_json({"k": "response", "response": item[1]}))
                    continue
                frame, index, meta = item
                self._result = loop.create_future()
                self._maps = []
                if self._shm is not None and len(frame) <= self._shm.size:
                    self._shm.put(frame)  # one memcpy; the pipe carries a few bytes
                    await self._write(pack_json({"k": "shm_volume", "n": len(frame)}))
                else:
                    await self._write(volume_head(len(frame)), frame)
                try:
                    result = await asyncio.wait_for(self._result, self.volume_timeout)
                except TimeoutError:
                    await self._fail(
                        f"process() took longer than {self.volume_timeout:g} s on volume {index}; "
                        "the run was stopped (endless loop?)", "process", index)
                    return
                self.processed += 1
                maps, self._maps = self._maps, []
                self.on_event("result", {**meta, **result, "maps": maps})
            except (ConnectionError, RunFailed):
                return  # the reader reports why the process went away

    async def _read_stdout(self) -> None:
        assert self.proc and self.proc.stdout
        while True:
            frame = await read_frame(self.proc.stdout)
            if frame is None:
                break
            kind, body = frame
            if kind == MAP and isinstance(body, bytes) and len(self._maps) < MAX_MAPS:
                self._maps.append(body)
                continue
            if kind != JSON or not isinstance(body, dict):
                continue
            k = body.get("k")
            if k == "result":
                if self._result is not None and not self._result.done():
                    self._result.set_result(body)
            elif k == "ready":
                self._ready.set_result(body)
            elif k == "log":
                self.store.log(body.get("level", "INFO"), body.get("message", ""))
                self.on_event("log", {"level": body.get("level", "INFO"), "message": body.get("message", "")})
            elif k == "subject":
                self.on_event("subject", {"message": body.get("message")})
            elif k == "file":
                asyncio.create_task(self._file(body))
            elif k == "error":
                await self._fail(
                    f"{body.get('stage')}() failed"
                    + (f" on volume {body['index']}" if body.get("index") is not None else "")
                    + f": {body.get('message')}", body.get("stage", "?"), body.get("index"), body.get("traceback", ""))
                return
            elif k == "ended":
                self.state = "ended"
                self.store.log("INFO", f"run ended after {self.processed} volumes")
                self.on_event("run_ended", {"volumes": self.processed})
                await self._finish()
                return
        # EOF without 'ended' or 'error': the process died
        code = await self.proc.wait()
        await asyncio.sleep(0.05)  # let stderr drain for the message
        tail = "\n".join(self._stderr_tail)
        why = ""
        if code == -9 and not self._killed and self.state not in ("failed", "ended"):  # not ours: the OOM killer?
            why = (f"; it was killed (SIGKILL), most likely because the machine ran out of memory "
                   f"(it last held {format_mb(self.peak_memory)}")
            why += f", the worker's {MEMORY_FLAG} is {format_mb(self.memory_limit)})" if self.memory_limit else ")"
        await self._fail(f"the run process exited unexpectedly (exit code {code}){why}", "crash", None, tail)

    async def _watch_memory(self) -> None:
        """Stop the run when its process holds more than ``memory_limit`` (see the module's doc)."""
        global _warned_no_proc
        assert self.proc and self.memory_limit
        limit, pid = self.memory_limit, self.proc.pid
        if not os.path.exists("/proc/self/statm"):
            if not _warned_no_proc:
                _warned_no_proc = True
                log.warning("cannot read the memory of run processes here (no /proc): %s is not enforced", MEMORY_FLAG)
            return
        while self.state in ("starting", "running", "stopping"):
            used = resident_memory(pid)
            if used is None:
                return  # the process is gone; the stdout reader says why
            self.peak_memory = max(self.peak_memory, used)
            if used > limit:
                await self._fail(
                    f"the project used more than {format_mb(limit)} of memory (the worker's {MEMORY_FLAG}; "
                    f"it held {format_mb(used)} after {self.processed} volume(s)); the run was stopped", "memory")
                return
            await asyncio.sleep(MEMORY_POLL)

    async def _read_stderr(self) -> None:
        assert self.proc and self.proc.stderr
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self._stderr_tail.append(line)
            self.store.log("STDERR", line)
            self.on_event("log", {"level": "STDERR", "message": line})

    async def _file(self, body: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"k": "file_reply", "id": body.get("id")}
        try:
            if body.get("op") == "dask_scheduler":
                if self.dask_scheduler is None:
                    raise OSError("this worker offers no Dask cluster")
                reply.update(ok=True, result=await self.dask_scheduler())
            else:
                reply.update(ok=True, result=await self.files(body["op"], body["path"], body.get("data")))
        except PermissionError as exc:
            reply.update(ok=False, code="permission", error=str(exc))
        except FileNotFoundError as exc:
            reply.update(ok=False, code="not_found", error=str(exc))
        except Exception as exc:
            reply.update(ok=False, code="error", error=str(exc))
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._write(pack_json(reply))

    async def _fail(self, message: str, stage: str, index: int | None = None, tb: str = "") -> None:
        if self.state in ("failed", "ended"):
            return
        self.state = "failed"
        self._error = {"message": message, "stage": stage, "index": index, "traceback": tb}
        self.store.log("ERROR", message + ("\n" + tb if tb else ""))
        if not self._ready.done():
            self._ready.set_exception(RunFailed(message, tb))
            self._ready.exception()  # mark retrieved
        else:
            self.on_event("run_failed", dict(self._error))
        await self._finish(kill=True)

    async def _finish(self, kill: bool = False) -> None:
        if self.proc and self.proc.returncode is None:
            if kill:
                _kill(self.proc)
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                _kill(self.proc)
                await self.proc.wait()
        current = asyncio.current_task()
        for t in self._tasks:
            if t is not current and t.get_name().endswith("feeder"):
                t.cancel()
        self._done.set()
        self.store.close()
        if self._shm is not None:
            self._shm.close()
            self._shm = None

    @property
    def error(self) -> dict[str, Any] | None:
        return self._error


@dataclass
class Spawned:
    """A run process started and importing, not yet told which project to run (it waits for ``init``)."""

    proc: asyncio.subprocess.Process
    shm: SharedFrame | None
    env: dict[str, str]

    def discard(self) -> None:
        if self.proc.returncode is None:
            _kill(self.proc)
        if self.shm is not None:
            self.shm.close()


def usable_shm_size(size: int = SHM_SIZE) -> int:
    """``size``, or 0 where this system has no shared memory for run processes."""
    return size if SharedFrame.available() else 0


async def spawn(shm_size: int) -> Spawned:
    """Start ``python -m rtcontrol.worker.runproc`` with a shared-memory slot of ``shm_size`` (0: none)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    shm = SharedFrame.create(shm_size) if shm_size else None
    args = ["--shm-fd", str(shm.fd), "--shm-size", str(shm.size)] if shm else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rtcontrol.worker.runproc", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env, limit=PIPE_SIZE, pass_fds=(shm.fd,) if shm else (),
    )
    _grow_pipe(proc.stdin)
    return Spawned(proc, shm, env)


class SpareProcess:
    """One run process started ahead of the next run.

    Python's start-up and the run process's imports (numpy, the codec) take about half a second, more on a
    busy machine; a run that starts in a process already waiting pays only for loading its project. That is
    what a console waits for at a run's start and after a restarted worker (feedback must resume within
    2 TRs). Each run still gets a fresh process of its own: a spare is handed out once, and refilled only
    when the worker asks (after the run's first result, so its start-up does not compete with the run's first
    volume for the CPU). A spare whose environment is no longer the worker's (a variable set since) is not
    used. A spare that waits is idle on its stdin and exits by itself if the worker dies (end of file).
    """

    def __init__(self) -> None:
        self._next: asyncio.Task[Spawned] | None = None

    def fill(self, shm_size: int) -> None:
        if self._next is None:
            self._next = asyncio.create_task(spawn(shm_size), name="spare run process")

    @property
    def filled(self) -> bool:
        """Whether a spare is started (or starting) for the next run."""
        return self._next is not None

    async def waiting(self) -> Spawned | None:
        """The spare once it has started, without taking it (None if there is none)."""
        return await asyncio.shield(self._next) if self._next is not None else None

    async def take(self, shm_size: int) -> Spawned:
        task, self._next = self._next, None
        if task is not None:
            try:
                spawned = await task
            except Exception as exc:  # the spare could not start: say so, start one the usual way
                log.warning("the spare run process did not start (%s); starting one now", exc)
            else:
                shm_ok = (spawned.shm.size if spawned.shm else 0) == shm_size
                if spawned.proc.returncode is None and shm_ok and spawned.env == dict(os.environ, PYTHONUNBUFFERED="1"):
                    return spawned
                spawned.discard()
        return await spawn(shm_size)

    async def close(self) -> None:
        task, self._next = self._next, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(BaseException):
            spawned = await task
            spawned.discard()
            await spawned.proc.wait()


def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL ``proc``; one that has just exited (asyncio has let go of it: ProcessLookupError) is fine."""
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def _grow_pipe(writer: asyncio.StreamWriter | None) -> None:
    """Make the pipe to the run process hold a whole volume (fewer wake-ups per volume, Linux)."""
    try:
        import fcntl

        fd = writer.get_extra_info("pipe").fileno()  # type: ignore[union-attr]
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except (ImportError, OSError, AttributeError):
        pass


def now() -> float:
    return time.monotonic()
