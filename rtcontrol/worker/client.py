"""The console's side of the worker link: :class:`WorkerClient`.

It keeps a session with the worker across drops: volumes the worker has not acknowledged are
resent after reconnecting (exponential backoff with a cap), events (feedback, logs, subject
messages, run failures) are acknowledged and delivered once, in order. Pings estimate the clock
offset so the worker's timeline stamps arrive in the console's clock.

If it reconnects to a worker that no longer knows the session (the worker was killed and started
again) while a run is going, the run is started again there with the same settings and every volume
of the run so far is sent again, in order: those still unacknowledged from memory, the rest from
``replay_source(run, indices) -> {index: Volume}`` (the console's recording). A :class:`RunChanged`
says ``RESTARTING`` when the new worker is found and ``RESTARTED`` (with what was replayed and what
could not be) once the replay is on its way; the console decides which feedback is catch-up
(:mod:`rtcontrol.console.resume`).

What to send and resend is decided by the shared delivery core (:class:`rtcontrol.link.delivery.Outbox`),
reconnecting by :func:`rtcontrol.link.reconnect.redial`. Everything the link has to say goes to one
callback, ``on_event(event)`` (:mod:`rtcontrol.link.events`: :class:`StateChanged`, :class:`Problem`,
:class:`FeedbackEvent`, :class:`LogLine`, :class:`SubjectMessage`, :class:`RunChanged`); it may be a plain
function or a coroutine function (scheduled as a task).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websockets

from rtcontrol.errors import RtcontrolError
from rtcontrol.link import transport
from rtcontrol.link.clock import ClockSync
from rtcontrol.link.codec import FrameError, decode_message, encode_message, encode_volume, map_from_parts, split_blob
from rtcontrol.link.delivery import LinkState, Outbox, Redial, Wait
from rtcontrol.link.events import (
    FeedbackEvent,
    LinkEvent,
    LogLine,
    MapEvent,
    Problem,
    RunChange,
    RunChanged,
    StateChanged,
    SubjectMessage,
)
from rtcontrol.link.pinning import KnownHosts, PinError
from rtcontrol.link.reconnect import redial
from rtcontrol.scanner.volume import Timeline, Volume
from rtcontrol.worker.console_files import ConsoleFiles

log = logging.getLogger(__name__)

__all__ = ["FeedbackEvent", "VolumeTooLarge", "WorkerClient", "WorkerError"]


class WorkerError(RtcontrolError):
    """The worker refused or failed a request; ``traceback`` holds the project's traceback if any."""

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback


class VolumeTooLarge(RtcontrolError, ValueError):
    pass


class WorkerClient:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        pins: KnownHosts | None = None,
        expected_fingerprint: str | None = None,
        allow_plain_loopback: bool = False,
        allowed_folders: list[Path] | tuple[Path, ...] = (),
        on_event: Callable[[LinkEvent], Any] | None = None,
        replay_source: Callable | None = None,
        max_size: int = transport.DEFAULT_MAX_SIZE,
        backoff: tuple[float, float] = (0.05, 5.0),
        ping_interval: float = 1.0,
        request_timeout: float = 120.0,
    ) -> None:
        self.url, self._token = url, token
        self._pins, self._expected = pins, expected_fingerprint
        self._allow_plain = allow_plain_loopback
        self.files = ConsoleFiles(list(allowed_folders))
        self.on_event = on_event
        self.replay_source = replay_source
        self._max_size, self._backoff = max_size, backoff
        self._ping_interval, self._request_timeout = ping_interval, request_timeout
        self.session = uuid.uuid4().hex
        self.clock = ClockSync()
        self._state = LinkState.DISCONNECTED
        self._conn: websockets.ClientConnection | None = None
        self._worker_max_size = max_size
        self._fingerprint: str | None = None
        #: volumes awaiting the worker's ack by (run, index), and requests awaiting its reply by id
        self._box: Outbox[tuple[str, int]] = Outbox()
        self._replies: dict[int, asyncio.Future] = {}  # request id -> its reply
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._last_event = 0
        self._had_session = False
        self._run: str | None = None
        self._run_start: dict[str, Any] = {}  # the active run's start_run arguments, to start it again
        self._run_sent: dict[int, int] = {}  # index -> seq of every volume queued in the active run, in order
        self._run_data_dir = ""  # where the worker said it saves the active run
        self._restarting = False  # the active run is to be started again on a restarted worker
        self._restart_request: tuple[int, dict[str, Any]] | None = None  # its start_run: (id, args)
        self.run_restarts = 0
        self._run_done: dict[str, asyncio.Future] = {}
        self._acked_all = asyncio.Event()
        self._acked_all.set()
        self._supervisor: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._closing = False
        self.reconnects = 0
        self.resent_volumes = 0
        self._redial = Redial("worker link", *backoff)  # a busy worker: wait and retry; a refusal is fatal
        #: the worker's plugins, as the last list_projects reply carried them:
        #: {"plugins": [{name, kind, source, description}], "errors": [{source, error, traceback}]}
        self.plugins: dict[str, Any] | None = None

    # ----------------------------------------------------------------- properties

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def rtt(self) -> float | None:
        """Latest ping round trip in seconds."""
        return self.clock.rtt

    @property
    def clock_offset(self) -> float:
        """Worker clock minus console clock (seconds)."""
        return self.clock.offset

    @property
    def fingerprint(self) -> str | None:
        return self._fingerprint

    @property
    def run(self) -> str | None:
        return self._run

    @property
    def pending_volumes(self) -> int:
        return len(self._box)

    # ----------------------------------------------------------------- lifecycle

    async def connect(self) -> None:
        """Connect once (raises LinkError/PinError/AuthError); afterwards reconnection is automatic."""
        self._closing = False
        self._set_state(LinkState.CONNECTING)
        try:
            first = Redial("worker link", *self._backoff, retry_errors=False, budget=60.0)
            link = await redial(self._dial, first, self._waiting)
        except BaseException:
            self._set_state(LinkState.FAILED)
            raise
        self._fingerprint = link.fingerprint
        self._ready = asyncio.Event()
        self._supervisor = asyncio.create_task(self._supervise(link), name="worker link")
        await self._ready.wait()  # resync done: state is "connected"
        if self._state is LinkState.FAILED:
            raise transport.LinkError(f"the link to {self.url} failed while starting")

    async def close(self) -> None:
        self._closing = True
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.send(encode_message("bye"))
                await conn.close()
        if self._supervisor:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for fut in self._replies.values():
            if not fut.done():
                fut.set_exception(WorkerError("the worker link was closed"))
        self._set_state(LinkState.CLOSED)

    async def __aenter__(self) -> WorkerClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def _dial(self) -> transport.Connected:
        return await transport.connect(
            self.url, token=self._token, hello={"role": "console", "session": self.session},
            pins=self._pins, expected_fingerprint=self._expected,
            allow_plain_loopback=self._allow_plain, max_size=self._max_size,
        )

    async def _supervise(self, link: transport.Connected) -> None:
        while True:
            await self._serve_connection(link)
            if self._closing:
                return
            self._set_state(LinkState.RECONNECTING)
            await asyncio.sleep(self._backoff[0])
            try:
                link = await redial(self._dial, self._redial, self._waiting)
            except (PinError, transport.AuthError) as exc:
                self._set_state(LinkState.FAILED)
                self._emit(Problem(f"worker link: {exc}"))
                self._ready.set()
                return
            self.reconnects += 1

    def _waiting(self, wait: Wait) -> None:
        if wait.notice:
            self._notice(wait.notice)
        else:
            log.info("reconnect to %s failed: %s (next try in %.2f s)", self.url, wait.error, wait.delay)

    async def _serve_connection(self, link: transport.Connected) -> None:
        conn = self._conn = link.conn
        self._box.connected()
        self._fingerprint = link.fingerprint
        self._worker_max_size = int(link.welcome.get("max_size") or self._max_size)
        self._set_state(LinkState.RESYNCING)
        if self._had_session and not link.welcome.get("resumed"):
            self._session_lost()
        self._had_session = True
        reader = asyncio.create_task(self._read(conn))
        pinger = asyncio.create_task(self._ping(conn))
        try:
            if self._restarting and not await self._restart_run(conn, reader):
                return  # the link dropped while the run was starting again: it is tried again on the next one
            await self._flush(conn)
            self._set_state(LinkState.CONNECTED)  # no await since the last check: nothing is left behind
            self._ready.set()
            await reader
        except websockets.ConnectionClosed:
            pass
        except Exception as exc:  # a bug must not end reconnection silently: report, drop, reconnect
            log.exception("worker link failed")
            self._emit(Problem(f"worker link: {type(exc).__name__}: {exc}"))
            with contextlib.suppress(Exception):
                await conn.close(1011, "console-side error")
        finally:
            self._box.disconnected()
            reader.cancel()
            pinger.cancel()
            await asyncio.gather(reader, pinger, return_exceptions=True)
            if self._conn is conn:
                self._conn = None

    def _session_lost(self) -> None:
        """The worker no longer knows our session (it restarted): its run and queued volumes are gone.

        A run still going is started again there (:meth:`_restart_run`); one that had already ended
        or failed on the lost worker is only reported."""
        self._last_event = 0
        run = self._run
        done = self._run_done.get(run) if run is not None else None
        stale, self._restart_request = self._restart_request, None  # killed again while restarting: a new request
        if stale is not None:
            self._box.replied(stale[0])
            self._replies.pop(stale[0], None)
        if run is not None and self._run_start and (done is None or not done.done()):
            self._restarting = True
            info = {"run": run, "volumes": len(self._run_sent), "previous_data_dir": self._run_data_dir}
            self._emit(RunChanged(run, RunChange.RESTARTING, info))
            return
        lost = len(self._box.session_lost())
        self._acked_all.set()
        self._run = None
        if run is not None:
            message = (f"the worker restarted and lost run {run!r}"
                       + (f" ({lost} volumes not delivered)" if lost else "") + "; start the run again")
            self._fail_run(run, message)

    def _fail_run(self, run: str, message: str) -> None:
        self._emit(Problem(message))
        info = {"run": run, "message": message}
        self._emit(RunChanged(run, RunChange.FAILED, info))
        done = self._run_done.get(run)
        if done is not None and not done.done():
            done.set_result(info)

    async def _restart_run(self, conn: websockets.ClientConnection, reader: asyncio.Task) -> bool:
        """Start the run again on a restarted worker with the same settings, then send it every volume of
        the run so far, in order, at once: unacknowledged ones from memory, the rest from ``replay_source``.
        Returns False if the link dropped before the worker answered; after a drop the next connection
        does it again (the worker's reply cache starts the run once, and it acknowledges a volume it
        already has without processing it again)."""
        run = self._run
        assert run is not None
        if self._restart_request is None:
            args = {**self._run_start, "restart": {"count": self.run_restarts + 1, "previous": self._run_data_dir}}
            rid = next(self._ids)
            self._replies[rid] = asyncio.get_running_loop().create_future()
            self._box.request(rid, encode_message("request", id=rid, op="start_run", args=args))
            self._restart_request = (rid, args)
        rid, args = self._restart_request
        fut = self._replies[rid]
        if not fut.done() and not self._box.sent_here(rid):
            await conn.send(self._box.mark_sent(rid))
        await asyncio.wait({fut, reader}, timeout=self._request_timeout, return_when=asyncio.FIRST_COMPLETED)
        if not fut.done():
            if reader.done():
                return False
            fut.set_result({"ok": False, "error": f"no answer within {self._request_timeout:.0f} s"})
        self._box.replied(rid)
        self._replies.pop(rid, None)
        reply = fut.result()
        if not reply.get("ok"):
            self._restarting, self._restart_request = False, None
            n_lost = len(self._box.session_lost())
            self._acked_all.set()
            self._run = None
            self._fail_run(run, f"the worker restarted and could not start run {run!r} again: {reply.get('error')}"
                           + (f" ({n_lost} volumes not delivered)" if n_lost else "") + "; start the run again")
            return True
        restart = args["restart"]
        self.run_restarts = restart["count"]
        self._run_data_dir = str((reply.get("result") or {}).get("data_dir") or "")
        indices = list(self._run_sent)
        missing = [i for i in indices if (run, i) not in self._box]
        volumes: Any = {}  # index -> Volume; a mapping that may read each volume only when asked
        why = ""
        if missing and self.replay_source is None:
            why = "this console keeps no record to replay them from"
        elif missing and self.replay_source is not None:
            try:
                got = self.replay_source(run, missing)
                volumes = await got if inspect.isawaitable(got) else got
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
        replayed: list[int] = []
        lost: list[int] = []
        for i in indices:
            key = (run, i)
            if key not in self._box:
                try:
                    volume = volumes.get(i)
                except Exception as exc:  # a damaged record: that volume is named, the others still go
                    volume, why = None, f"{type(exc).__name__}: {exc}"
                if volume is None:
                    lost.append(i)
                    continue
                self._box.queue(key, encode_volume(volume, self._run_sent[i], run=run))
                self._acked_all.clear()
            replayed.append(i)
            send = self._box.send_item(key)
            if send is not None:
                self.resent_volumes += 1
                await conn.send(send.frame)  # waits while the link is busy: the replay holds little in memory
                await asyncio.sleep(0)
        self._restarting, self._restart_request = False, None
        if lost and not why:
            why = "they are not in the console's record"
        info = {"run": run, "volumes": len(indices), "replayed": replayed, "lost": lost, "why": why,
                "data_dir": self._run_data_dir, "previous_data_dir": restart["previous"],
                "design": (reply.get("result") or {}).get("design")}
        self._emit(RunChanged(run, RunChange.RESTARTED, info))
        return True

    async def _flush(self, conn: websockets.ClientConnection) -> None:
        """Send every unanswered request, then every unacknowledged volume, not yet sent on this
        connection, in order; repeat until nothing new arrived meanwhile."""
        while sends := self._box.flush():
            for send in sends:
                if send.key in self._box or send.kind != "item":  # an ack may have come in meanwhile
                    self.resent_volumes += send.resend
                    await conn.send(send.frame)

    # ----------------------------------------------------------------- requests

    async def _request(self, op: str, **args: Any) -> Any:
        return (await self._reply(op, **args)).get("result")

    async def _reply(self, op: str, **args: Any) -> dict[str, Any]:
        """The whole reply to a request (``result`` and any extra keys); raises WorkerError if it failed."""
        rid = next(self._ids)
        text = encode_message("request", id=rid, op=op, args=args)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._replies[rid] = fut
        send, conn = self._box.request(rid, text), self._conn
        if send is not None and conn is not None:
            with contextlib.suppress(websockets.ConnectionClosed):
                await conn.send(send.frame)
        try:
            reply = await asyncio.wait_for(fut, self._request_timeout)
        except TimeoutError:
            raise WorkerError(f"the worker did not answer {op!r} within {self._request_timeout:.0f} s") from None
        finally:
            self._replies.pop(rid, None)
            self._box.replied(rid)
        if not reply.get("ok"):
            raise WorkerError(reply.get("error", f"{op} failed"), reply.get("traceback", ""))
        return reply

    async def list_projects(self) -> list[dict]:
        """The worker's projects; the plugins it found at start-up come along in :attr:`plugins`."""
        reply = await self._reply("list_projects")
        if isinstance(reply.get("plugins"), dict):
            self.plugins = reply["plugins"]
        return reply["result"]  # an answer that is ok always has a result

    async def project_settings(self, name: str) -> list[dict]:
        return await self._request("project_settings", name=name)

    async def start_run(self, project: str, settings: dict | None, run: str, tr: float | None) -> dict:
        """Start ``project`` for ``run`` on the worker; returns the settings it resolved and where it saves."""
        args = {"project": project, "settings": settings or {}, "run": run, "tr": tr}
        result = await self._request("start_run", **args)
        self._run, self._run_start, self._run_sent = run, args, {}
        self._run_data_dir = str((result or {}).get("data_dir") or "")
        self._seq = itertools.count(1)  # volumes are numbered per run
        self._run_done[run] = asyncio.get_running_loop().create_future()
        return result

    async def send_volume(self, volume: Volume) -> None:
        """Queue a volume of the current run; it is sent now if connected, else after reconnecting."""
        if self._run is None:
            raise WorkerError("start a run on the worker before sending volumes")
        volume.timeline.stamp("sent")
        seq = next(self._seq)
        frame = encode_volume(volume, seq, run=self._run)
        if len(frame) > self._worker_max_size:
            raise VolumeTooLarge(
                f"volume {volume.index} is {len(frame)} bytes, over the worker's limit of {self._worker_max_size}; "
                "start the worker with a larger --max-size"
            )
        key = (self._run, int(volume.index))
        if key in self._box:
            return
        self._run_sent.setdefault(int(volume.index), seq)
        send = self._box.queue(key, frame)
        self._acked_all.clear()
        conn = self._conn
        if send is not None and conn is not None:
            with contextlib.suppress(websockets.ConnectionClosed):
                await conn.send(frame)

    async def send_response(self, response: dict) -> None:
        """A subject response for the running project (``on_response``)."""
        conn = self._conn
        if conn is None:
            raise WorkerError("the worker link is down; the response was not delivered")
        await conn.send(encode_message("response", response=response))

    async def stop_run(self, timeout: float = 60.0) -> dict:
        """Wait until the worker has every volume, end the run and wait for its last events.

        However it ends (even cancelled: the console gave up waiting), the run is over for this client:
        a worker that restarts afterwards is not given it again."""
        run = self._run
        if run is None:
            raise WorkerError("no run is active")
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._acked_all.wait(), timeout)
            result = await self._request("stop_run")
            done = self._run_done.get(run)
            if done is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(done), timeout)
        finally:
            if self._run == run:
                self._run, self._run_start, self._run_sent, self._restarting = None, {}, {}, False
        return result

    async def status(self) -> dict:
        return await self._request("status")

    # ----------------------------------------------------------------- incoming

    async def _read(self, conn: websockets.ClientConnection) -> None:
        async for raw in conn:
            if isinstance(raw, (bytes, bytearray)):  # a statistical map: an event with a binary payload
                await self._on_map(conn, raw)
                continue
            try:
                msg = decode_message(raw)
            except FrameError as exc:
                self._emit(Problem(f"worker link: {exc}"))
                continue
            kind = msg["type"]
            if kind == "ack":
                self._on_ack(msg)
            elif kind == "event":
                await self._on_event(conn, msg)
            elif kind == "reply":
                rid = msg.get("id")
                fut = self._replies.get(rid) if isinstance(rid, int) else None
                if fut is not None and not fut.done():
                    self._box.replied(rid)
                    fut.set_result(msg)
            elif kind == "pong":
                if isinstance(msg.get("t0"), (int, float)):
                    self.clock.add(msg["t0"], msg["t1"], msg["t2"], time.monotonic())
            elif kind == "file_request":
                self._spawn(self._answer_file(conn, msg))
            elif kind == "error":
                self._emit(Problem(f"worker: {msg.get('message')}"))

    def _on_ack(self, msg: dict[str, Any]) -> None:
        run, index = msg.get("run"), msg.get("index")
        if run is not None and index is not None:  # no item is open under a key with None
            self._box.ack((run, index))
        if not len(self._box):
            self._acked_all.set()
        if msg.get("error"):
            self._emit(Problem(f"worker: {msg['error']}"))

    async def _on_event(self, conn: websockets.ClientConnection, msg: dict[str, Any]) -> None:
        seq = int(msg.get("seq", 0))
        if seq == self._last_event + 1:
            self._last_event = seq
            self._deliver(msg)
        with contextlib.suppress(websockets.ConnectionClosed):
            await conn.send(encode_message("event_ack", upto=self._last_event))

    async def _on_map(self, conn: websockets.ClientConnection, frame: bytes | bytearray) -> None:
        """A map event: checked, then delivered in its place among the events (a bad one is reported and
        acknowledged, so the events after it are not held up)."""
        try:
            header, payload = split_blob(frame)
            seq = header.get("seq")
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise FrameError("a map frame from the worker has no event seq")
            event: MapEvent | Problem
            try:
                data, affine, peak = map_from_parts(header, payload)
                event = MapEvent(header["run"], header["index"], header["name"], data, affine, peak)
            except FrameError as exc:
                event = Problem(f"worker link: {exc}")
        except FrameError as exc:
            self._emit(Problem(f"worker link: {exc}"))
            return
        if seq == self._last_event + 1:
            self._last_event = seq
            self._emit(event)
        with contextlib.suppress(websockets.ConnectionClosed):
            await conn.send(encode_message("event_ack", upto=self._last_event))

    def _deliver(self, msg: dict[str, Any]) -> None:
        event, run = msg.get("event"), msg.get("run")
        if event == "feedback":
            tl = Timeline.from_dict(msg.get("timeline"))
            worker_tl = msg.get("worker_timeline") or {}
            for stage, t in worker_tl.items():
                tl.stamp(stage, self.clock.to_local(float(t)))
            tl.stamp("feedback_received")
            ev = FeedbackEvent(str(run), int(msg["index"]), msg.get("feedback"), msg.get("metrics") or {}, tl,
                               worker_tl)
            self._emit(ev)
        elif event == "log":
            self._emit(LogLine(run, msg.get("level", "INFO"), msg.get("message", "")))
        elif event == "subject_message":
            self._emit(SubjectMessage(run, msg.get("message")))
        elif event in ("run_failed", "run_ended"):
            state = RunChange.FAILED if event == "run_failed" else RunChange.ENDED
            if state is RunChange.FAILED:
                self._emit(Problem(f"run {run}: {msg.get('message')}", msg.get("traceback", "")))
            self._emit(RunChanged(str(run), state, msg))
            done = self._run_done.get(run) if run is not None else None
            if done is not None and not done.done():
                done.set_result(msg)

    async def _answer_file(self, conn: websockets.ClientConnection, msg: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"id": msg.get("id")}
        try:
            result = await asyncio.to_thread(self.files.handle, msg["op"], msg["path"], msg.get("data"))
            reply.update(ok=True, result=result)
        except PermissionError as exc:
            reply.update(ok=False, code="permission", error=str(exc))
        except FileNotFoundError as exc:
            reply.update(ok=False, code="not_found", error=str(exc))
        except Exception as exc:
            reply.update(ok=False, code="error", error=f"{type(exc).__name__}: {exc}")
        if not reply["ok"]:
            self._emit(LogLine(self._run, "WARNING", f"console file request refused: {reply['error']}"))
        with contextlib.suppress(websockets.ConnectionClosed):
            await conn.send(encode_message("file_reply", **reply))

    async def _ping(self, conn: websockets.ClientConnection) -> None:
        n = 0
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await conn.send(encode_message("ping", t0=time.monotonic()))
                n += 1
                await asyncio.sleep(0.05 if n < 5 else self._ping_interval)

    # ----------------------------------------------------------------- helpers

    def _notice(self, message: str) -> None:
        log.warning("%s", message)
        self._emit(LogLine(self._run, "WARNING", message))

    def _set_state(self, state: LinkState) -> None:
        if state != self._state:
            self._state = state
            self._emit(StateChanged(state, fingerprint=self._fingerprint or ""))

    def _emit(self, event: LinkEvent) -> None:
        if self.on_event is None:
            return
        try:
            result = self.on_event(event)
            if inspect.isawaitable(result):
                self._spawn(result)
        except Exception:
            log.exception("worker client callback failed on %s", type(event).__name__)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
