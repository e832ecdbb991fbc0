"""The worker's server: sessions per console, runs per session, reliable events back.

Protocol (JSON control frames from :mod:`rtcontrol.link.codec`, volumes as binary frames):

console -> worker                              worker -> console
  hello {token, session}                         welcome {session, resumed, max_size, worker}
  request {id, op, args}                         reply {id, ok, result | error, traceback}
                                                   (list_projects: also plugins {plugins, errors};
                                                    start_run: {run, project, settings, data_dir, design},
                                                    design = the project's blocks (Design.to_dict) or null)
  <volume frame>                                 ack {run, index, duplicate?, error?}
  event_ack {upto}                               event {seq, event, ...}  (feedback, log, subject_message,
  response {response}                                                   run_failed, run_ended)
  file_reply {id, ok, result | error, code}      file_request {id, op, path, data?}
  ping {t0}                                      pong {t0, t1, t2}

A session outlives its connection: after a drop the console reconnects with the same session
id, resends the volumes not acknowledged (duplicates are acknowledged, not processed again) and
the worker resends every event the console has not acknowledged, in order. Requests are
answered from a cache when resent, so ``start_run`` never starts a run twice.

A worker that was restarted knows no session: its welcome says ``resumed: false``, and a console
with a run going starts it again with ``start_run {..., restart: {count, previous}}`` and replays the
run's volumes; the run is then saved in a folder of its own (see :mod:`rtcontrol.worker.store`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.server import Server, ServerConnection

from rtcontrol import __version__
from rtcontrol.link import transport
from rtcontrol.link.codec import (
    FrameError,
    JsonTooDeep,
    decode_message,
    decode_volume,
    encode_blob,
    encode_message,
    map_from_parts,
    split_blob,
)
from rtcontrol.link.tokens import TokenStore
from rtcontrol.paths import plugins_dir
from rtcontrol.worker.cluster import DaskCluster
from rtcontrol.worker.projects import ProjectCatalog, ProjectError, discover_plugins
from rtcontrol.worker.runner import AUTO_MEMORY, RunFailed, RunProcess, SpareProcess, usable_shm_size
from rtcontrol.worker.store import RunStore, default_data_dir

log = logging.getLogger(__name__)
ACTIVE = ("starting", "running", "stopping")


class Session:
    """One console's state on this worker; survives reconnections."""

    def __init__(self, sid: str, owner: str = "", max_event: int = 8 * 1024 * 1024) -> None:
        self.id, self.owner, self.max_event = sid, owner, max_event
        self.conn: ServerConnection | None = None
        self.detached_at: float | None = None
        self.outbox: OrderedDict[int, str | bytes] = OrderedDict()
        self.map_seq: dict[str, int] = {}  # map name -> seq of its newest map event
        self.map_warned: set[tuple[str, str]] = set()
        self.next_seq = 1
        self.wake = asyncio.Event()
        self.received: set[tuple[str, int]] = set()
        self.run: RunProcess | None = None
        self.replies: OrderedDict[Any, str] = OrderedDict()
        self.inflight: set[Any] = set()
        self.file_waiters: dict[int, asyncio.Future] = {}
        self.next_file_id = 0

    def emit(self, event: str, **fields: Any) -> None:
        """Queue an event for the console; kept until the console acknowledges it."""
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        try:
            text = encode_message("event", seq=seq, event=event, **fields)
            problem = (f"{len(text)} bytes is over the {self.max_event}-byte limit for one message "
                       "(return smaller feedback)" if len(text) > self.max_event else "")
        except JsonTooDeep as exc:  # the console would refuse it and the events after it would wait for good
            problem = f"{exc} (return flatter feedback)"
        if problem:  # never let one event block the link for good
            text = encode_message(
                "event", seq=seq, event="log", run=fields.get("run"), level="ERROR",
                message=f"{event} of volume {fields.get('index')} dropped: {problem}",
            )
        self.outbox[seq] = text
        self.wake.set()

    def emit_map(self, frame: bytes, run: str) -> None:
        """Queue a statistical map (a binary frame from the run process) as the next event.

        Only the newest map of each name waits for the console: an older one not yet acknowledged becomes
        a small ``map_superseded`` event in its place (the console skips it), so a console away for a
        while costs the worker one map per name, not one per volume, and the events stay in order."""
        try:
            header, payload = split_blob(frame)
            map_from_parts(header, payload)
            if header.get("run") != run:
                raise FrameError(f"it names run {header.get('run')!r}, not {run!r}")
        except FrameError as exc:
            self.emit("log", run=run, level="ERROR", message=f"a statistical map was dropped: {exc}")
            return
        name = str(header["name"])
        if len(frame) > self.max_event:
            if (run, name) not in self.map_warned:
                self.map_warned.add((run, name))
                self.emit("log", run=run, level="ERROR",
                          message=f"map {name!r} is {len(frame)} bytes, over the {self.max_event}-byte limit for one "
                                  "message: it is not sent (said once per run)")
            return
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        old = self.map_seq.get(name)
        if old is not None and old in self.outbox:
            self.outbox[old] = encode_message("event", seq=old, event="map_superseded", run=run)
        self.map_seq[name] = seq
        self.outbox[seq] = encode_blob({**header, "seq": seq}, payload)
        self.wake.set()

    def ack(self, upto: int) -> None:
        while self.outbox and next(iter(self.outbox)) <= upto:
            self.outbox.popitem(last=False)

    async def send_events(self, conn: ServerConnection) -> None:
        """Per connection: send every unacknowledged event in order, then each new one."""
        sent = 0
        self.wake.set()
        while True:
            await self.wake.wait()
            self.wake.clear()
            for seq in list(self.outbox):
                if seq > sent and seq in self.outbox:
                    await conn.send(self.outbox[seq])
                    sent = seq

    async def send(self, text: str) -> bool:
        conn = self.conn
        if conn is None:
            return False
        try:
            await conn.send(text)
            return True
        except websockets.ConnectionClosed:
            return False


class WorkerServer:
    def __init__(
        self,
        *,
        tokens: TokenStore,
        ssl_context: Any,
        catalog: ProjectCatalog | None = None,
        data_dir: Path | None = None,
        insecure_loopback: bool = False,
        max_size: int = transport.DEFAULT_MAX_SIZE,
        volume_timeout: float = 30.0,
        start_timeout: float = 60.0,
        file_timeout: float = 30.0,
        session_linger: float = 600.0,
        plugin_dirs: list[Path] | None = None,
        run_memory_limit: int | None = AUTO_MEMORY,
        dask: DaskCluster | None = None,
    ) -> None:
        self.tokens, self.ssl_context = tokens, ssl_context
        self.catalog = catalog or ProjectCatalog()
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.insecure_loopback, self.max_size = insecure_loopback, max_size
        self.volume_timeout, self.start_timeout = volume_timeout, start_timeout
        self.file_timeout, self.session_linger = file_timeout, session_linger
        self.run_memory_limit = run_memory_limit  # bytes per run process (None: no limit; AUTO_MEMORY: half the RAM)
        self.sessions: dict[str, Session] = {}
        self._ending: set[RunProcess] = set()  # runs of consoles that said bye, finishing
        self.server: Server | None = None
        self._reaper: asyncio.Task | None = None
        #: where plugins are looked for: the install's plugins/ and the --plugins folders
        self.plugin_folders = [plugins_dir(), *(Path(d) for d in plugin_dirs or [])]
        self._plugins: asyncio.Task | None = None
        self.dask = dask or DaskCluster()  # a LocalCluster only once a run asks for parallel work
        self.spare = SpareProcess()  # a run process waiting for the next run (see SpareProcess)

    async def start(self, host: str, port: int) -> int:
        self.server = await transport.serve(
            self._handle, host, port, tokens=self.tokens, ssl_context=self.ssl_context,
            insecure_loopback=self.insecure_loopback, max_size=self.max_size, role="worker",
        )
        self._reaper = asyncio.create_task(self._reap())
        self._plugins = asyncio.create_task(self._scan_plugins())  # in the background: start-up is not delayed
        self.spare.fill(usable_shm_size())
        return transport.bound_port(self.server)

    async def plugins(self) -> dict[str, Any]:
        """The plugins found at start-up (waits for the scan): ``{"plugins": [...], "errors": [...]}``."""
        if self._plugins is None:
            self._plugins = asyncio.create_task(self._scan_plugins())
        return await asyncio.shield(self._plugins)

    async def _scan_plugins(self) -> dict[str, Any]:
        found = await discover_plugins(self.plugin_folders)
        for p in found["plugins"]:
            log.info("plugin %s (%s) from %s", p["name"], p["kind"], p["source"])
        for e in found["errors"]:
            log.warning("plugin %s failed to load: %s\n%s", e["source"], e["error"], e.get("traceback", ""))
        return found

    async def close(self) -> None:
        if self._reaper:
            self._reaper.cancel()
        if self._plugins and not self._plugins.done():
            self._plugins.cancel()  # kills the scan's subprocess
            with contextlib.suppress(asyncio.CancelledError):
                await self._plugins
        if self.server:
            self.server.close()
            await self.server.wait_closed()
        for s in self.sessions.values():
            if s.run:
                await s.run.kill()
        for rp in list(self._ending):
            await rp.kill()
        self.sessions.clear()
        await self.spare.close()
        await self.dask.close()

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, self.session_linger / 2))
            now = time.monotonic()
            for sid, s in list(self.sessions.items()):
                if s.conn is None and s.detached_at and now - s.detached_at > self.session_linger:
                    log.info("session %s left %.0f s ago: ending it", sid[:8], now - s.detached_at)
                    if s.run:
                        await s.run.kill()
                    del self.sessions[sid]

    # ----------------------------------------------------------------- connection

    async def _handle(self, conn: ServerConnection, peer: transport.Peer) -> None:
        sid = str(peer.hello.get("session") or uuid.uuid4())
        session = self.sessions.get(sid)
        if session is not None and session.owner != peer.token_name:
            session, sid = None, str(uuid.uuid4())  # a session belongs to the token that opened it
        resumed = session is not None
        if session is None:
            session = self.sessions[sid] = Session(sid, peer.token_name, max_event=min(self.max_size, 8 << 20))
        old = session.conn
        session.conn, session.detached_at = conn, None
        if old is not None:  # a new connection replaces a half-dead one
            asyncio.create_task(old.close(1001, "replaced by a new connection of the same session"))
        log.info("%s %s session %s (%s)", "resumed" if resumed else "new", peer.address, sid[:8], peer.token_name)
        await conn.send(encode_message(
            "welcome", session=sid, resumed=resumed, max_size=self.max_size,
            worker=socket.gethostname(), version=__version__,
        ))
        sender = asyncio.create_task(session.send_events(conn))
        try:
            async for raw in conn:
                t_recv = time.monotonic()
                try:
                    if isinstance(raw, bytes):
                        await self._on_volume(session, conn, raw, t_recv)
                        continue
                    try:
                        msg = decode_message(raw)
                    except FrameError as exc:
                        await conn.send(encode_message("error", code="bad_frame", message=str(exc)))
                        continue
                    await self._dispatch(session, conn, msg, t_recv)
                except websockets.ConnectionClosed:
                    continue  # our answer is lost, but what the console sent before closing still counts
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    log.warning("bad message from %s: %s", peer.address, exc)
                    await conn.send(encode_message("error", code="bad_message", message=f"{type(exc).__name__}: {exc}"))
        except websockets.ConnectionClosed:
            pass
        finally:
            sender.cancel()
            if session.conn is conn:
                session.conn, session.detached_at = None, time.monotonic()

    async def _dispatch(self, session: Session, conn: ServerConnection, msg: dict[str, Any], t_recv: float) -> None:
        kind = msg["type"]
        if kind == "ping":
            await conn.send(encode_message("pong", t0=msg.get("t0"), t1=t_recv, t2=time.monotonic()))
        elif kind == "event_ack":
            session.ack(int(msg.get("upto", 0)))
        elif kind == "request":
            rid = msg.get("id")
            if rid in session.replies:
                await conn.send(session.replies[rid])
            elif rid not in session.inflight:
                session.inflight.add(rid)
                asyncio.create_task(self._request(session, rid, msg.get("op"), msg.get("args") or {}))
        elif kind == "response":
            if session.run and session.run.state in ACTIVE:
                session.run.respond(msg.get("response") or {})
        elif kind == "file_reply":
            fid = msg.get("id")
            fut = session.file_waiters.pop(fid, None) if isinstance(fid, int) else None
            if fut and not fut.done():
                fut.set_result(msg)
        elif kind == "bye":  # the console is done: end its run and forget the session
            self.sessions.pop(session.id, None)
            ending = session.run
            if ending and ending.state in ACTIVE:
                self._ending.add(ending)
                task = asyncio.create_task(ending.stop())
                task.add_done_callback(lambda _t: self._ending.discard(ending))
            await conn.close()
        else:
            await conn.send(encode_message("error", code="unexpected", message=f"the worker does not take {kind!r}"))

    async def _on_volume(self, session: Session, conn: ServerConnection, frame: bytes, t_recv: float) -> None:
        try:
            volume, _ = decode_volume(frame)
        except FrameError as exc:
            try:
                header, _ = split_blob(frame)
                run, index = header.get("run"), header.get("index")
            except FrameError:
                run = index = None
            await conn.send(encode_message("ack", run=run, index=index, error=f"bad volume frame: {exc}"))
            return
        key = (volume.run, volume.index)
        if key in session.received:
            await conn.send(encode_message("ack", run=volume.run, index=volume.index, duplicate=True))
            return
        run = session.run
        if run is None or run.run != volume.run or run.state not in ("starting", "running"):
            why = f"run {run.run!r} is {run.state}" if run else "no run was started"
            await conn.send(encode_message(
                "ack", run=volume.run, index=volume.index,
                error=f"volume {volume.index} of run {volume.run!r} refused: {why}"))
            return
        session.received.add(key)
        run.submit(frame, volume.index, {
            "run": volume.run, "index": volume.index,
            "timeline": volume.timeline.to_dict(), "worker_received": t_recv,
        })
        await asyncio.sleep(0)  # the run's feeder hands the volume to the project first; the ack can wait
        await conn.send(encode_message("ack", run=volume.run, index=volume.index))

    # ----------------------------------------------------------------- requests

    async def _request(self, session: Session, rid: Any, op: Any, args: dict[str, Any]) -> None:
        try:
            result = await self._op(session, op, args)
            extra = {"plugins": await self.plugins()} if op == "list_projects" else {}  # beside the list
            text = encode_message("reply", id=rid, ok=True, result=result, **extra)
        except KeyError as exc:
            text = encode_message("reply", id=rid, ok=False, error=f"request {op!r} lacks the argument {exc}")
        except (ProjectError, RunFailed, ValueError, TypeError) as exc:
            tb = getattr(exc, "traceback", "")
            text = encode_message("reply", id=rid, ok=False, error=str(exc), traceback=tb)
        except Exception as exc:  # report, never kill the worker
            log.exception("request %s failed", op)
            text = encode_message("reply", id=rid, ok=False, error=f"{type(exc).__name__}: {exc}", traceback="")
        session.replies[rid] = text
        while len(session.replies) > 200:
            session.replies.popitem(last=False)
        session.inflight.discard(rid)
        await session.send(text)

    async def _op(self, session: Session, op: Any, args: dict[str, Any]) -> Any:
        if op == "list_projects":
            return await self.catalog.list()
        if op == "project_settings":
            return (await self.catalog.describe(str(args["name"])))["settings"]
        if op == "start_run":
            return await self._start_run(session, args)
        if op == "stop_run":
            run = session.run
            if run is None:
                raise ValueError("no run to stop")
            await run.stop()
            return {"run": run.run, "state": run.state, "volumes": run.processed, "error": run.error}
        if op == "status":
            run = session.run
            return {"run": run.run if run else None, "state": run.state if run else None,
                    "volumes": run.processed if run else 0}
        raise ValueError(f"unknown request {op!r}")

    async def _start_run(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        project, run_name = str(args["project"]), str(args["run"])
        if not run_name:
            raise ValueError("a run needs a name")
        if session.run and session.run.state in ACTIVE:
            raise ValueError(f"run {session.run.run!r} is still {session.run.state}; stop it first")
        folder = self.catalog.folder(project)
        tr = args.get("tr")
        restart: dict[str, Any] = args["restart"] if isinstance(args.get("restart"), dict) else {}
        count = max(0, int(restart.get("count") or 0))
        store = RunStore(self.data_dir, run_name, restart=count)
        store.log("INFO", f"project {project} ({folder}), run {run_name}, TR {tr}")
        if count:  # the console starts the run again after this worker (re)started: a save of its own
            store.note_restart(run_name, count, str(restart.get("previous") or ""))
            store.log("INFO", f"restart {count} of run {run_name} after the worker restarted; the console replays "
                      f"its volumes (the lost worker's partial save: {Path(str(restart.get('previous') or '?')).name})")
        # forget the volumes of an earlier run with the same name: it is a new run
        session.received = {k for k in session.received if k[0] != run_name}
        rp = RunProcess(
            project=project, project_dir=folder, run=run_name, settings=dict(args.get("settings") or {}),
            tr=float(tr) if tr is not None else None, store=store,
            on_event=lambda kind, fields: self._run_event(session, store, run_name, kind, fields),
            files=lambda op, path, data: self._console_file(session, op, path, data),
            volume_timeout=self.volume_timeout, start_timeout=self.start_timeout,
            memory_limit=self.run_memory_limit, dask_scheduler=self.dask.address,
        )
        session.run = rp
        try:
            settings = await rp.start(self.spare)
        except BaseException:
            self.spare.fill(rp.shm_size)  # for the next run
            raise
        # the next run's spare is started after this run's first result (see _run_event), not now: its start-up
        # (Python and numpy, ~0.5 s of CPU) would compete with the run's first volume
        return {"run": run_name, "project": project, "settings": settings, "data_dir": str(store.dir),
                "design": rp.design}

    def _run_event(self, session: Session, store: RunStore, run: str, kind: str, fields: dict[str, Any]) -> None:
        if kind == "result":
            record = {
                "run": run, "index": fields["index"], "feedback": fields.get("feedback"),
                "metrics": fields.get("metrics") or {}, "timeline": fields.get("timeline") or {},
                "worker_timeline": {"worker_received": fields["worker_received"], "result_ready": fields["t_ready"]},
            }
            session.emit("feedback", **record)
            for frame in fields.get("maps") or ():
                session.emit_map(frame, run)
            # saved right after the event is on its way to the console, not before
            asyncio.get_running_loop().call_soon(store.feedback, record)
        elif kind == "log":
            session.emit("log", run=run, **fields)
        elif kind == "subject":
            session.emit("subject_message", run=run, **fields)
        elif kind in ("run_failed", "run_ended"):
            session.emit(kind, run=run, **fields)
        if kind in ("result", "run_failed", "run_ended"):  # the next run's process, once this event is on its way
            asyncio.get_running_loop().call_soon(self.spare.fill, usable_shm_size())

    async def _console_file(self, session: Session, op: str, path: str, data: str | None) -> Any:
        if session.conn is None:
            raise ConnectionError("the console is not connected right now; console files are unavailable")
        session.next_file_id += 1
        fid = session.next_file_id
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        session.file_waiters[fid] = fut
        fields: dict[str, Any] = {"id": fid, "op": op, "path": path}
        if data is not None and len(data) > self.max_size - 4096:
            session.file_waiters.pop(fid, None)
            raise PermissionError(f"refused {path!r}: {len(data) * 3 // 4} bytes is too large for one link message")
        if data is not None:
            fields["data"] = data
        if not await session.send(encode_message("file_request", **fields)):
            session.file_waiters.pop(fid, None)
            raise ConnectionError("the console link dropped; console files are unavailable")
        try:
            reply = await asyncio.wait_for(fut, self.file_timeout)
        except TimeoutError:
            raise TimeoutError("the console did not answer the file request within "
                               f"{self.file_timeout:.0f} s") from None
        finally:
            session.file_waiters.pop(fid, None)
        if reply.get("ok"):
            return reply.get("result")
        code = reply.get("code")
        exc = {"permission": PermissionError, "not_found": FileNotFoundError}.get(code, OSError)
        raise exc(reply.get("error", "refused by the console"))
