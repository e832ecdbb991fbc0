"""The run process: runs ONE project run, talking to the worker over stdin/stdout frames.

Started by :class:`rtcontrol.worker.runner.RunProcess` as ``python -m rtcontrol.worker.runproc``
(``--describe DIR`` describes a project, ``--plugins DIR...`` lists the plugins found, as JSON).
The protocol fd is a private copy of stdout; the real fd 1 is pointed at stderr so a stray
``print`` in project code cannot corrupt the protocol (it ends up in the project's log).

Worker -> run:  J init {project_dir, run, settings, tr, output_dir}, V <volume frame>,
                J response {response}, J file_reply {id, ok, result|error}, J stop {}
Run -> worker:  J ready {settings, design}, M <map frame> (0..MAX_MAPS, just before their result),
                J result {index, feedback, metrics, t_ready},
                J log {level, message}, J subject {message}, J file {id, op, path, data?},
                J error {stage, index, message, traceback}, J ended {}
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import sys
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any

from rtcontrol.link.codec import FrameError, decode_volume, encode_map
from rtcontrol.project import Design, Project, Result, RunContext, resolve_settings
from rtcontrol.scanner.volume import Volume
from rtcontrol.worker.parallel import DaskParallel
from rtcontrol.worker.pipe import JSON, MAP, MAX_MAPS, VOLUME, SharedFrame, SyncChannel
from rtcontrol.worker.projects import describe_folder, load_project_class


class _PipeLogHandler(logging.Handler):
    def __init__(self, chan: SyncChannel) -> None:
        super().__init__()
        self.chan = chan

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.chan.send({"k": "log", "level": record.levelname, "message": self.format(record)})
        except Exception:  # never let logging kill the run
            pass


class ChildFiles:
    """``ctx.files`` in a run process: each call is a request to the console via the worker."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def list(self, folder: str) -> list[str]:
        return self.runner.file_call("list", folder)

    def read(self, path: str) -> bytes:
        return base64.b64decode(self.runner.file_call("read", path))

    def write(self, path: str, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"ctx.files.write needs bytes, not {type(data).__name__} (encode text first)")
        self.runner.file_call("write", path, base64.b64encode(bytes(data)).decode())


def _json_safe(value: Any, what: str) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serializable numbers/strings/lists/dicts without NaN: {exc}") from None
    return value


def _json_body(frame: tuple[bytes, bytes | dict[str, Any]]) -> dict[str, Any]:
    """The object of a JSON frame; ``{}`` for a volume frame (its payload is bytes)."""
    payload = frame[1]
    return payload if isinstance(payload, dict) else {}


def _clean_metrics(metrics: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k, v in (metrics or {}).items():
        f = float(v)
        out[str(k)] = f if math.isfinite(f) else None
    return out


def run_design(project: Project, settings: dict[str, Any], ctx: RunContext) -> dict[str, Any] | None:
    """The run's blocks as JSON for the console (None: no design). A failing ``design()`` only costs the
    shading: it is logged and the run goes on."""
    try:
        design = project.design(settings)
        if design is not None and not isinstance(design, Design):
            raise TypeError(f"design() must return a rtcontrol.project.Design or None, not {type(design).__name__}")
        return design.to_dict() if design is not None else None
    except Exception as exc:
        ctx.logger.error(f"design() failed, so the console shows no blocks ahead: {type(exc).__name__}: {exc}")
        return None


class Runner:
    def __init__(self, chan: SyncChannel) -> None:
        self.chan = chan
        self.pending: deque[tuple[bytes, Any]] = deque()
        self.next_file_id = 0
        self.project: Project | None = None
        self.ctx: RunContext | None = None
        self.shm: SharedFrame | None = None
        self._map_warned: set[str] = set()

    def recv(self) -> tuple[bytes, Any] | None:
        return self.pending.popleft() if self.pending else self.chan.recv()

    def file_call(self, op: str, path: str, data: str | None = None) -> Any:
        self.next_file_id += 1
        fid = self.next_file_id
        msg: dict[str, Any] = {"k": "file", "id": fid, "op": op, "path": str(path)}
        if data is not None:
            msg["data"] = data
        self.chan.send(msg)
        while True:
            frame = self.chan.recv()
            if frame is None:
                raise ConnectionError("the worker went away during a console file request")
            kind, body = frame[0], _json_body(frame)
            if kind == JSON and body.get("k") == "file_reply" and body.get("id") == fid:
                if body.get("ok"):
                    return body.get("result")
                code = body.get("code", "")
                exc_type = {"permission": PermissionError, "not_found": FileNotFoundError}.get(code, OSError)
                raise exc_type(body.get("error", "console file request failed"))
            self.pending.append(frame)

    def send_maps(self, result: Result, volume: Volume) -> None:
        """The result's statistical maps, each as the frame the console gets; a map that cannot be sent is
        logged (once per name) and left out, the feedback still goes."""
        maps = result.maps or {}
        if not isinstance(maps, dict):
            self._warn_map("", f"Result.maps must be a dict of name -> 3-D array, not {type(maps).__name__}")
            return
        affine = volume.affine if result.map_affine is None else result.map_affine
        for n, (name, data) in enumerate(maps.items()):
            if n >= MAX_MAPS:
                self._warn_map("+", f"only {MAX_MAPS} maps per volume are sent; {', '.join(map(str, list(maps)[n:]))} "
                               "left out")
                return
            try:
                frame = encode_map(self.ctx.run if self.ctx else volume.run, volume.index, name, data, affine)
            except (FrameError, TypeError, ValueError) as exc:
                self._warn_map(str(name), f"not sent: {exc}")
                continue
            self.chan.send_bytes(MAP, frame)

    def _warn_map(self, name: str, message: str) -> None:
        if name not in self._map_warned and self.ctx is not None:
            self._map_warned.add(name)
            self.ctx.logger.warning(f"statistical map {message} (said once)")

    def dask_scheduler(self) -> str:
        """The worker's Dask scheduler address (the worker starts its LocalCluster on the first ask)."""
        return str(self.file_call("dask_scheduler", ""))

    def fail(self, stage: str, exc: BaseException, index: int | None = None) -> None:
        self.chan.send({
            "k": "error", "stage": stage, "index": index,
            "message": f"{type(exc).__name__}: {exc}",
            "traceback": "".join(traceback.format_exception(exc)),
        })

    def main(self) -> int:
        frame = self.chan.recv()
        if frame is None or frame[0] != JSON or _json_body(frame).get("k") != "init":
            return 3
        init = _json_body(frame)
        try:
            cls = load_project_class(Path(init["project_dir"]))
            project = cls()
            settings = resolve_settings(cls.settings, init.get("settings"))
            logger = logging.getLogger(f"rtcontrol.project.{init['run']}")
            logger.setLevel(logging.INFO)
            logger.propagate = False
            handler = _PipeLogHandler(self.chan)
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
            out = Path(init["output_dir"]) if init.get("output_dir") else None
            ctx = RunContext(
                run=init["run"], settings=settings, tr=init.get("tr"), output_dir=out,
                files=ChildFiles(self), logger=logger,
                _to_subject=lambda message: self.chan.send(
                    {"k": "subject", "message": _json_safe(message, "a subject message")}),
            )
            ctx.parallel = DaskParallel(self.dask_scheduler, project_dir=Path(init["project_dir"]), logger=logger)
            self.project, self.ctx = project, ctx
        except BaseException as exc:
            self.fail("load", exc)
            return 1
        try:
            project.start_run(ctx)
        except BaseException as exc:
            self.fail("start_run", exc)
            return 1
        self.chan.send({"k": "ready", "settings": settings, "design": run_design(project, settings, ctx)})
        while True:
            frame = self.recv()
            if frame is None or (frame[0] == JSON and _json_body(frame).get("k") == "stop"):
                try:
                    project.end_run(ctx)
                except BaseException as exc:
                    self.fail("end_run", exc)
                    return 1
                self.chan.send({"k": "ended"})
                return 0
            kind, payload = frame
            body = _json_body(frame)
            if kind == VOLUME or body.get("k") == "shm_volume":
                index = None
                try:
                    if isinstance(payload, bytes):  # kind == VOLUME
                        volume, _ = decode_volume(payload, copy=True)
                    else:
                        assert self.shm is not None, "shared memory volume without a shared slot"
                        view = self.shm.view(int(body["n"]))
                        try:
                            volume, _ = decode_volume(view, copy=True)  # the project owns its copy
                        finally:
                            view.release()
                    index = volume.index
                    if volume.tr is not None:  # the console decided the run's TR on its first volume
                        ctx.tr = volume.tr
                    result = Result.of(project.process(volume, ctx))
                    if left := ctx.parallel.end_volume():  # work belongs to its volume: nothing piles up
                        ctx.logger.warning(f"volume {index}: {left} ctx.submit task(s) unfinished when process() "
                                           "returned: cancelled")
                    self.send_maps(result, volume)
                    msg = {
                        "k": "result", "index": index,
                        "feedback": _json_safe(result.feedback, "feedback"),
                        "metrics": _clean_metrics(result.metrics),
                        "t_ready": time.monotonic(),
                    }
                    self.chan.send(msg)
                except BaseException as exc:
                    self.fail("process", exc, index)
                    return 1
            elif body.get("k") == "response":
                try:
                    project.on_response(body.get("response") or {}, ctx)
                except BaseException as exc:
                    self.fail("on_response", exc)
                    return 1


def _first_to_go() -> None:
    """If the machine runs out of memory, the kernel kills this run, not the worker or the console
    (Linux; raising our own OOM score needs no privilege). Usually the worker's memory limit stops
    a growing run first (rtcontrol.worker.runner); this covers a project that grows faster."""
    try:
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write("1000")
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--describe"]:
        print(json.dumps(describe_folder(Path(argv[1]))))
        return 0
    if argv[:1] == ["--plugins"]:  # the worker's start-up scan, away from its own process
        from rtcontrol.analysis.plugins import discover

        print(json.dumps(discover([Path(a) for a in argv[1:]]).summary()))
        return 0
    _first_to_go()
    shm = None
    if argv[:1] == ["--shm-fd"]:
        shm = SharedFrame(int(argv[1]), int(argv[3]))
    proto_out = os.fdopen(os.dup(1), "wb")  # buffered: writes whole frames, flushed per message
    os.dup2(2, 1)  # stray prints go to stderr -> the project's log
    chan = SyncChannel(os.fdopen(0, "rb", buffering=1 << 20), proto_out)
    runner = Runner(chan)
    runner.shm = shm
    try:
        return runner.main()
    finally:
        if runner.ctx is not None:
            runner.ctx.parallel.close()


if __name__ == "__main__":
    sys.exit(main())
