"""``SubjectClient``: the console's side of the link to a subject agent.

It dials out (``wss://`` with a pinned certificate and a token, via :mod:`rtcontrol.link.transport`),
measures the clock offset (:class:`rtcontrol.link.clock.ClockSync`) so the agent reports stamps in the
console's clock, reconnects with backoff, and resends every feedback value the agent has not
acknowledged (marked ``late``; the agent drops duplicates by run and volume index). Nothing here
blocks: ``send_feedback`` and ``send_message`` only queue. What to send and resend is decided by the
shared delivery core (:class:`rtcontrol.link.delivery.Outbox`), reconnecting by
:func:`rtcontrol.link.reconnect.redial`.

Everything the link has to say goes to one callback, ``on_event(event)`` (a plain function, called on
the event loop) with an event of :mod:`rtcontrol.link.events`:

* :class:`Delivery` ``(run, index, stamps)``: ``stamps`` has ``subject_delivered``, then ``consumer_taken`` and
  ``displayed`` (earliest over consumers), all in the console's ``time.monotonic()`` clock, plus
  ``consumers`` (per consumer: ``taken``/``displayed``), ``late``, ``onset_missed`` and ``cancelled``, and
  the agent's word on the value: ``outcome`` ("delivered" with ``taken_by`` naming the consumers that took
  it, "no_consumer", "dropped" with ``dropped`` saying who and why, "cancelled", or while undecided
  "scheduled"/"pending"). Only "delivered" means a stimulus program got it; an ack alone does not.
* :class:`Response`: ``{"consumer", "consumer_kind", "run", "t", "data"}`` from a stimulus program;
  ``consumer`` is the agent's name for the authenticated connection, never taken from the message.
* :class:`StateChanged`: ``state`` (a :class:`LinkState`: connecting, connected, disconnected, or failed
  when the certificate or token was refused), ``error``, and in ``agent`` the agent's ``run`` and
  ``consumers`` when it reports them.
* :class:`Problem`: the agent refused something the console sent.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import websockets

from rtcontrol.errors import RtcontrolError
from rtcontrol.link import transport
from rtcontrol.link.clock import ClockSync
from rtcontrol.link.delivery import Kind, LinkState, Outbox, Redial, Wait
from rtcontrol.link.events import Delivery, LinkEvent, Problem, Response, StateChanged
from rtcontrol.link.pinning import KnownHosts, PinError
from rtcontrol.link.reconnect import redial
from rtcontrol.subject import protocol as P

log = logging.getLogger(__name__)

#: Control messages kept while the link is down (run start/stop, messages); the oldest go first.
MAX_BACKLOG = 1000
#: Feedback values kept for resending while the agent is unreachable (hours of TRs).
MAX_UNACKED = 20_000
CLOCK_SAMPLES = 5
CLOCK_REFRESH_S = 10.0


class SubjectError(RtcontrolError, RuntimeError):
    """The agent (or the run settings check) refused a request; the message says why."""


class SubjectClient:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        pins: KnownHosts | None = None,
        expected_fingerprint: str | None = None,
        allow_plain_loopback: bool = False,
        on_event: Callable[[LinkEvent], None] | None = None,
        backoff: tuple[float, float] = (0.1, 5.0),
        reply_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self._allow_plain_loopback = allow_plain_loopback
        self._connect = functools.partial(
            transport.connect, token=token, pins=pins, expected_fingerprint=expected_fingerprint,
            allow_plain_loopback=allow_plain_loopback, max_size=1024 * 1024,
            hello={"role": "console", "protocol": P.PROTOCOL})
        self.on_event = on_event
        self.backoff = backoff
        self.reply_timeout = reply_timeout
        self.clock = ClockSync()
        #: feedback awaiting the agent's ack by (run, index); control messages kept while the link is down
        self._box: Outbox[tuple[str, int]] = Outbox(limit=MAX_UNACKED, backlog=MAX_BACKLOG)
        self._sending: set[asyncio.Task[None]] = set()
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._first = asyncio.Event()
        self._fatal: BaseException | None = None
        self._pong: asyncio.Future[dict[str, Any]] | None = None
        self._replies: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        self.fingerprint: str | None = None
        self.connections = 0
        self._redial = Redial("subject link", *backoff)  # a busy agent: wait and retry; a refusal is fatal
        self.agent_state: dict[str, Any] = {}

    # ------------------------------------------------------------------------------- lifecycle

    @property
    def connected(self) -> bool:
        return self._box.ready

    @property
    def unacked(self) -> dict[tuple[str, int], dict[str, Any]]:
        """Feedback the agent has not acknowledged yet, oldest first (resent after a reconnect)."""
        return self._box.unacked

    @property
    def dropped_unacked(self) -> int:
        """Feedback values dropped unacknowledged over :data:`MAX_UNACKED` (the agent was away for hours)."""
        return self._box.dropped

    async def connect(self, timeout: float | None = 10.0) -> None:
        """Start the link and wait for the first connection.

        A pinned-certificate mismatch or a refused token raises at once (and stops retrying); if the agent
        is not reachable within ``timeout`` a :class:`transport.LinkError` is raised but retries go on.
        """
        parts = urlsplit(self.url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise transport.LinkError(f"{self.url!r} is not a wss:// (or loopback ws://) address of a subject agent")
        if parts.scheme == "ws":  # a setup mistake, not worth retrying
            transport.check_plain_allowed(parts.hostname, self._allow_plain_loopback, self.url)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"subject link {self.url}")
        try:
            await asyncio.wait_for(self._first.wait(), timeout)
        except TimeoutError:
            raise transport.LinkError(f"subject agent at {self.url} not reachable within {timeout} s; "
                                      "still retrying") from None
        if self._fatal is not None:
            raise self._fatal

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        self._box.disconnected()

    async def __aenter__(self) -> SubjectClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------------- sending

    def send_feedback(self, run: str, index: int, value: Any, timeline: dict[str, float] | None = None,
                      acquired: float | None = None) -> None:
        """Queue one feedback value (timeline and ``acquired`` in this host's ``time.monotonic()``)."""
        msg: dict[str, Any] = {"type": "feedback", "run": run, "index": int(index), "value": value,
                               "timeline": dict(timeline or {})}
        if acquired is not None:
            msg["acquired"] = float(acquired)
        P.parse_feedback(msg, "send_feedback")  # refuse bad values here, where the caller can see it
        if self._box.queue((run, int(index)), msg, replace=True) is not None:  # over MAX_UNACKED: the oldest go
            self._send_now(msg)

    def send_message(self, text: str = "", kind: str = "text", run: str | None = None,
                     data: Any = None) -> None:
        """A message for the stimulus: ``kind`` e.g. ``instruction``, ``rest``, ``run_over``."""
        msg: dict[str, Any] = {"type": "message", "kind": kind, "text": text}
        if run is not None:
            msg["run"] = run
        if data is not None:
            P.check_value(data, "send_message data")
            msg["data"] = data
        self._send_control(msg)

    async def start_run(self, settings: dict[str, Any]) -> None:
        """Start a run on the agent: ``settings`` holds ``run`` and optionally ``tr``, ``onset``, ``display``,
        ``t0`` (console clock), ``extra``. Raises :class:`SubjectError` if the settings are refused."""
        msg = {"type": "run_start", "run": settings.get("run"), "settings": dict(settings)}
        try:
            P.parse_run_settings(msg)
        except P.ProtocolError as exc:
            raise SubjectError(str(exc)) from None
        await self._request(msg, str(settings["run"]))

    async def stop_run(self, run: str | None = None, link_wait: float = 5.0) -> None:
        """Stop the run (pending delayed onsets are cancelled); waits for the agent if connected.

        A run often ends right after its last feedback: if the link is down then while values of the run
        are still unacknowledged, wait up to ``link_wait`` seconds for it to come back, so they are
        delivered (marked late) before the stop instead of being lost with the run.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + link_wait
        while (not self._box.ready and loop.time() < deadline
               and any(run is None or key[0] == run for key in self.unacked)):
            await asyncio.sleep(0.05)
        await self._request({"type": "run_stop", "run": run}, str(run))

    async def _request(self, msg: dict[str, Any], run: str) -> None:
        """Send a run_start/run_stop and wait for the agent's answer (queued instead while the link is down)."""
        if not self._box.ready:
            self._box.post(msg)  # goes out first when the link returns
            return
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[(msg["type"], run)] = fut
        try:
            self._send_now(msg)
            try:
                answer = await asyncio.wait_for(fut, self.reply_timeout)
            except TimeoutError:
                raise SubjectError(f"the subject agent did not answer {msg['type']} within "
                                   f"{self.reply_timeout:g} s") from None
        finally:
            self._replies.pop((msg["type"], run), None)
        if answer.get("type") == "error":
            raise SubjectError(str(answer.get("message")))

    def _send_control(self, msg: dict[str, Any]) -> None:
        if self._box.post(msg) is not None:
            self._send_now(msg)

    def _send_now(self, msg: dict[str, Any]) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # outside the running loop: qasync's last event pass at shutdown. Nothing can be sent now;
            # feedback stays in ``unacked`` (resent on the next connection), control messages wait.
            if msg.get("type") != "feedback":
                self._box.keep(msg)
            log.debug("subject link: %s kept, the event loop is not running", msg.get("type"))
            return
        frame = P.encode({**msg, "v": P.VERSION})
        task = loop.create_task(self._send_frame(conn, frame))
        self._sending.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._sending.discard)

    @staticmethod
    async def _send_frame(conn: Any, frame: str) -> None:
        try:
            await conn.send(frame)
        except websockets.ConnectionClosed:
            pass  # the reader notices; unacked feedback is resent on reconnect

    # ------------------------------------------------------------------------------- the link

    async def _run(self) -> None:
        try:
            await self._link()
        except RuntimeError as exc:  # a step taken in qasync's last event pass, after the loop stopped
            if "no running event loop" not in str(exc):
                raise
            self._box.disconnected()
            log.debug("subject link stopped with the event loop")

    async def _dial(self) -> transport.Connected:
        self._state(LinkState.CONNECTING)
        return await self._connect(self.url)

    def _waiting(self, wait: Wait) -> None:
        if wait.notice:  # a busy agent, said once per episode
            log.warning("%s", wait.notice)
            self._state(LinkState.DISCONNECTED, wait.notice)
        elif not wait.throttled:
            self._state(LinkState.DISCONNECTED, wait.error)

    async def _link(self) -> None:
        while True:
            try:
                connected = await redial(self._dial, self._redial, self._waiting)
            except (PinError, transport.AuthError) as exc:
                self._fatal = exc
                self._state(LinkState.FAILED, str(exc))
                self._first.set()
                log.error("subject link refused: %s", exc)
                return
            self._box.connected()
            self._conn = connected.conn
            self.fingerprint = connected.fingerprint
            self.connections += 1
            reader = asyncio.create_task(self._read(connected.conn))
            try:
                await self._sync_clock(CLOCK_SAMPLES)
                self._flush()
                self._first.set()
                self._state(LinkState.CONNECTED)
                while not reader.done():
                    done, _ = await asyncio.wait({reader}, timeout=CLOCK_REFRESH_S)
                    if not done:
                        await self._sync_clock(1)
            except (TimeoutError, websockets.ConnectionClosed, ConnectionError):
                pass
            finally:
                self._box.disconnected()
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                await connected.conn.close()
                self._conn = None
                for fut in self._replies.values():
                    if not fut.done():
                        fut.set_result({"type": "error", "message": "the link to the subject agent dropped"})
            self._state(LinkState.DISCONNECTED)

    async def _sync_clock(self, samples: int) -> None:
        conn = self._conn
        for _ in range(samples):
            self._pong = asyncio.get_running_loop().create_future()
            t0 = time.monotonic()
            await conn.send(P.encode({"type": "ping", "t0": t0, "v": P.VERSION}))
            pong = await asyncio.wait_for(self._pong, self.reply_timeout)
            self.clock.add(t0, float(pong["t1"]), float(pong["t2"]), time.monotonic())
        # agent stamps + offset = console clock; ClockSync.offset is agent minus console
        await conn.send(P.encode({"type": "clock", "offset": -self.clock.offset, "v": P.VERSION}))

    def _flush(self) -> None:
        """Queued control messages first, then every unacknowledged feedback value (marked late)."""
        while sends := self._box.flush():  # sending only queues tasks: the second pass finds nothing
            for send in sends:
                self._send_now({**send.frame, "late": True} if send.kind is Kind.ITEM else send.frame)

    async def _read(self, conn: Any) -> None:
        async for raw in conn:
            try:
                msg = P.decode(raw, "frame from subject agent", P.AGENT_TO_CONSOLE)
            except P.ProtocolError as exc:
                log.warning("%s", exc)
                continue
            try:
                self._dispatch(msg)
            except Exception:  # a failing callback must not take the link down
                log.exception("subject link callback failed on %s", msg.get("type"))

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "pong":
            if self._pong is not None and not self._pong.done():
                self._pong.set_result(msg)
        elif kind == "ack":
            self._box.ack((msg["run"], msg["index"]))
            self._emit(Delivery(msg["run"], msg["index"], msg.get("stamps") or {}))
        elif kind == "delivery":
            self._emit(Delivery(msg["run"], msg["index"], msg.get("stamps") or {}))
        elif kind == "response":
            self._emit(Response({k: v for k, v in msg.items() if k not in ("type", "v")}))
        elif kind == "state":
            self.agent_state = {k: v for k, v in msg.items() if k not in ("type", "v")}
            self._state(LinkState.CONNECTED if self._box.ready else LinkState.CONNECTING)
        elif kind in ("run_started", "run_stopped"):
            want = {"run_started": "run_start", "run_stopped": "run_stop"}[kind]
            for (sent, run), fut in list(self._replies.items()):
                if sent == want and (run == str(msg.get("run")) or run == "None") and not fut.done():
                    fut.set_result(msg)
        elif kind == "error":
            op = msg.get("op")
            waiting = self._replies.get((str(op), str(msg.get("run"))))
            if waiting is not None and not waiting.done():
                waiting.set_result(msg)
            else:
                self._emit(Problem(str(msg.get("message"))))

    def _emit(self, event: LinkEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _state(self, state: LinkState, error: str = "") -> None:
        try:
            self._emit(StateChanged(state, error, self.fingerprint or "", dict(self.agent_state)))
        except Exception:
            log.exception("subject link state callback failed")
