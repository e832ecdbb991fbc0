"""The worker's side of one run process: start it, feed it volumes one at a time, watch it.

A crash (the process exits), an exception (it reports the traceback) or an endless loop (no
result within ``volume_timeout``) stops only this run: the process is killed if needed and
``on_event("run_failed", ...)`` tells the session, which tells the console. Nothing here
blocks the worker's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Awaitable, Callable

from rtcontrol.worker.pipe import JSON, SharedFrame, pack_json, read_frame, volume_head
from rtcontrol.worker.store import RunStore

log = logging.getLogger(__name__)

#: ``on_event(kind, fields)``: run_ready, result, log, subject, run_failed, run_ended.
EventSink = Callable[[str, dict[str, Any]], None]
#: ``files(op, path, data) -> result``; raises PermissionError/FileNotFoundError/OSError.
FilesHandler = Callable[[str, str, str | None], Awaitable[Any]]

_STOP = object()
PIPE_SIZE = 1 << 20


class RunFailed(Exception):
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
        shm_size: int = 64 * 1024 * 1024,
        dask_scheduler: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self.project, self.project_dir, self.run = project, project_dir, run
        self.settings, self.tr, self.store = settings, tr, store
        self.on_event, self.files = on_event, files
        self.volume_timeout, self.start_timeout = volume_timeout, start_timeout
        self.shm_size = shm_size if SharedFrame.available() else 0
        self._shm: SharedFrame | None = None
        self.state = "starting"  # starting, running, stopping, ended, failed
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.processed = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._result: asyncio.Future[dict[str, Any]] | None = None
        self._ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._done = asyncio.Event()
        self._stderr_tail: deque[str] = deque(maxlen=30)
        self._tasks: list[asyncio.Task] = []
        self._error: dict[str, Any] | None = None
        self.dask_scheduler = dask_scheduler  # the worker's cluster address, asked for by ctx.map/submit

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> dict[str, Any]:
        """Spawn the process, wait until the project is loaded; returns the resolved settings."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._shm = SharedFrame.create(self.shm_size) if self.shm_size else None
        args = ["--shm-fd", str(self._shm.fd), "--shm-size", str(self._shm.size)] if self._shm else []
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rtcontrol.worker.runproc", *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=env, limit=PIPE_SIZE, pass_fds=(self._shm.fd,) if self._shm else (),
        )
        _grow_pipe(self.proc.stdin)
        self._tasks = [
            asyncio.create_task(self._read_stdout(), name=f"run {self.run} stdout"),
            asyncio.create_task(self._read_stderr(), name=f"run {self.run} stderr"),
        ]
        (self.store.dir / "output").mkdir(exist_ok=True)
        await self._write(pack_json({
            "k": "init", "project_dir": str(self.project_dir), "run": self.run,
            "settings": self.settings, "tr": self.tr, "output_dir": str(self.store.dir / "output"),
        }))
        try:
            ready = await asyncio.wait_for(asyncio.shield(self._ready), self.start_timeout)
        except asyncio.TimeoutError:
            await self._fail(f"project {self.project!r} did not start within {self.start_timeout:.0f} s", "start")
            raise RunFailed(self._error["message"]) from None  # type: ignore[index]
        except RunFailed:
            raise
        self.state = "running"
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
        except asyncio.TimeoutError:
            await self._fail(f"the run did not end within {timeout:.0f} s after stop", "end_run")

    async def kill(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.kill()
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
                if self._shm is not None and len(frame) <= self._shm.size:
                    self._shm.put(frame)  # one memcpy; the pipe carries a few bytes
                    await self._write(pack_json({"k": "shm_volume", "n": len(frame)}))
                else:
                    await self._write(volume_head(len(frame)), frame)
                try:
                    result = await asyncio.wait_for(self._result, self.volume_timeout)
                except asyncio.TimeoutError:
                    await self._fail(
                        f"process() took longer than {self.volume_timeout:g} s on volume {index}; "
                        "the run was stopped (endless loop?)", "process", index)
                    return
                self.processed += 1
                self.on_event("result", {**meta, **result})
            except (ConnectionError, RunFailed):
                return  # the reader reports why the process went away

    async def _read_stdout(self) -> None:
        assert self.proc and self.proc.stdout
        while True:
            frame = await read_frame(self.proc.stdout)
            if frame is None:
                break
            kind, body = frame
            if kind != JSON:
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
        await self._fail(f"the run process exited unexpectedly (exit code {code})", "crash", None, tail)

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
                self.proc.kill()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except asyncio.TimeoutError:
                self.proc.kill()
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
