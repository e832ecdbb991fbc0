"""The subject agent's core: what happens to a feedback value between the console and the consumers.

No sockets and no Qt here. The console's connection hands decoded messages to
:meth:`SubjectAgent.handle_console` and drains :attr:`SubjectAgent.outbox`; local consumers are
:class:`~rtcontrol.subject.consumers.Consumer` objects added to :attr:`SubjectAgent.hub` and pass what
they send back to :meth:`SubjectAgent.handle_consumer`.

Sessions: every ``run_start`` begins a new session, whatever the run's name. A feedback value is known by
(session, run, index): a resend within the run's session (after a reconnect) is acknowledged and never
handed out twice, while the same run name started again (a second console, the same settings) is new.

Outcomes: the agent says what became of each value (``outcome`` in its stamps): ``delivered`` once a
consumer took it (``taken_by`` names them), ``no_consumer`` when no stimulus program was connected when it
went out, ``dropped`` when the consumers it was queued for never took it, ``cancelled`` (run stopped before
its onset), and while undecided ``scheduled`` (waiting for its onset) or ``pending`` (queued).

Clocks: the agent stamps with its own ``time.monotonic()`` and reports in the console's clock, using the
offset the console measured and sent (``clock`` message; console = agent + offset).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from rtcontrol.subject import protocol as P
from rtcontrol.subject.consumers import Consumer, ConsumerQueue, Hub

log = logging.getLogger(__name__)

#: How many (run, index) records are kept to acknowledge duplicates and report late stamps.
MAX_RECORDS = 20_000
#: Messages for the console kept while it is away (responses, stamps); the oldest go first.
MAX_OUTBOX = 20_000
#: How long a run stop waits for queued values to be taken (or dropped) before the console is told.
SETTLE_S = 2.0

DELIVERED, NO_CONSUMER, DROPPED, CANCELLED, SCHEDULED, PENDING = (
    "delivered", "no_consumer", "dropped", "cancelled", "scheduled", "pending")


@dataclass(eq=False)
class Record:
    """What happened to one feedback value here (agent clock)."""

    run: str
    index: int
    received: float
    late: bool
    onset_at: float
    session: int = 0
    released: float | None = None
    onset_missed: bool = False
    consumers: dict[str, dict[str, float]] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None
    cancelled: str | None = None
    offered: int = 0  # consumers connected when it went out
    waiting: set[Consumer] = field(default_factory=set)  # consumers holding it in their queue
    dropped: dict[str, str] = field(default_factory=dict)  # consumer -> why it never took it

    @property
    def taken_by(self) -> list[str]:
        return [name for name, d in self.consumers.items() if "taken" in d]

    @property
    def outcome(self) -> str:
        if self.taken_by:
            return DELIVERED
        if self.cancelled:
            return CANCELLED
        if self.released is None:
            return SCHEDULED
        if self.waiting:
            return PENDING
        return DROPPED if self.offered else NO_CONSUMER


class FeedbackItem(dict[str, Any]):
    """A feedback item as consumers get it (a plain JSON object), remembering its record here."""

    record: Record


class SubjectAgent:
    """Receives feedback, schedules its onset, fans it out, and reports stamps and responses back."""

    def __init__(self) -> None:
        self.hub = Hub(self._taken, self._consumers_changed, self._discarded)
        self.outbox = ConsumerQueue(MAX_OUTBOX)
        self.offset = 0.0  # console clock = agent clock + offset
        self.runs: dict[str, P.RunSettings] = {}
        self.current: P.RunSettings | None = None
        self.records: OrderedDict[tuple[int, str, int], Record] = OrderedDict()
        self.sessions: dict[str, int] = {}  # run name -> the session its latest run_start began
        self.session = 0
        self._pending: set[Record] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.errors = 0
        self._quiet: Record | None = None  # reports for this record wait for its ack

    def record(self, run: Any, index: Any) -> Record | None:
        """The record of ``run``'s value ``index`` in the session of the run's latest start."""
        if not isinstance(run, str):
            return None
        return self.records.get((self.sessions.get(run, 0), run, index))

    # ------------------------------------------------------------------ clocks

    def to_console(self, t: float | None) -> float | None:
        return None if t is None else t + self.offset

    def from_console(self, t: float | None) -> float | None:
        return None if t is None else t - self.offset

    # ------------------------------------------------------------------ console -> agent

    def handle_console(self, msg: dict[str, Any]) -> None:
        """One decoded message from the console; errors go back to the console as ``error`` messages."""
        kind = msg.get("type")
        try:
            if kind == "feedback":
                self._feedback(P.parse_feedback(msg, "feedback from console"))
            elif kind == "run_start":
                self._run_start(msg)
            elif kind == "run_stop":
                self._run_stop(msg.get("run"))
            elif kind == "message":
                self._message(msg)
            elif kind == "clock":
                self._clock(msg)
            elif kind == "ping":
                now = time.monotonic()
                self.send_console({"type": "pong", "t0": msg.get("t0"), "t1": now, "t2": now})
            else:
                raise P.ProtocolError(f"console message type {kind!r} is not understood by this agent")
        except P.ProtocolError as exc:
            self.errors += 1
            log.warning("refused console message: %s", exc)
            self.send_console({"type": "error", "op": kind, "run": msg.get("run"), "index": msg.get("index"),
                               "message": str(exc)})

    def console_attached(self) -> None:
        """A console (re)connected: tell it where things stand."""
        self.send_console(self.state())

    def send_console(self, msg: dict[str, Any]) -> None:
        self.outbox.put(msg)

    def state(self) -> dict[str, Any]:
        return {
            "type": "state",
            "protocol": P.PROTOCOL,
            "run": self.current.run if self.current else None,
            "consumers": [c.info() for c in self.hub.consumers],
            "outbox_dropped": self.outbox.dropped,
        }

    def _clock(self, msg: dict[str, Any]) -> None:
        offset = msg.get("offset")
        if not isinstance(offset, (int, float)) or isinstance(offset, bool):
            raise P.ProtocolError(f"clock message needs a numeric 'offset', got {offset!r}")
        self.offset = float(offset)

    def _run_start(self, msg: dict[str, Any]) -> None:
        settings = P.parse_run_settings(msg)
        self.session += 1
        self.sessions[settings.run] = self.session
        self.runs[settings.run] = settings
        self.current = settings
        self.hub.publish({"type": "run_start", **settings.to_consumer()})
        self.send_console({"type": "run_started", "run": settings.run})
        log.info("run %s started (onset %s)", settings.run, settings.onset.mode)

    def _run_stop(self, run: Any) -> None:
        if run is not None and not isinstance(run, str):
            raise P.ProtocolError(f"run_stop 'run' must be a string, got {run!r}")
        run = run or (self.current.run if self.current else None)
        session = self.sessions.get(run, 0) if isinstance(run, str) else None
        for rec in self.records.values():
            if rec.run == run and rec.session == session and rec.timer is not None:
                rec.timer.cancel()
                rec.timer = None
                rec.cancelled = "run stopped before its onset"
                self._report(rec)
        if self.current and self.current.run == run:
            self.current = None
        self.hub.publish({"type": "run_stop", "run": run})
        # the console's summary follows this answer: let queued values be taken (or dropped) first
        task = asyncio.get_running_loop().create_task(self._stopped(run, session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stopped(self, run: Any, session: int | None) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_S
        while loop.time() < deadline and any(r.run == run and r.session == session for r in self._pending):
            await asyncio.sleep(0.01)
        self.send_console({"type": "run_stopped", "run": run})

    def _message(self, msg: dict[str, Any]) -> None:
        text = msg.get("text", "")
        kind = msg.get("kind", "text")
        if not isinstance(text, str) or not isinstance(kind, str):
            raise P.ProtocolError("a message needs string 'kind' and 'text', e.g. {'kind': 'rest', 'text': 'Rest'}")
        out = {"type": "message", "kind": kind, "text": text,
               "run": msg.get("run") or (self.current.run if self.current else None)}
        if "data" in msg:
            P.check_value(msg["data"], "message data")
            out["data"] = msg["data"]
        self.hub.publish(out)

    def _feedback(self, fb: P.Feedback) -> None:
        now = time.monotonic()
        session = self.sessions.get(fb.run, 0)
        key = (session, fb.run, fb.index)
        rec = self.records.get(key)
        if rec is not None:  # a resend within this run's session: acknowledge, never deliver twice
            self.send_console({"type": "ack", "run": fb.run, "index": fb.index, "duplicate": True,
                               "stamps": self.stamps(rec)})
            return
        settings = self.runs.get(fb.run)
        missed = False
        if settings is None or fb.late:
            at = now
        else:
            at = P.onset_time(settings.onset, now, self.from_console(fb.acquired),
                              self.from_console(settings.t0), fb.index)
            if settings.onset.mode == "delay":  # did it arrive after the moment it was meant for?
                late_by = now - P.onset_time(settings.onset, float("-inf"), self.from_console(fb.acquired),
                                             self.from_console(settings.t0), fb.index)
                missed = late_by > 0.001
        rec = Record(fb.run, fb.index, now, fb.late, at, session, onset_missed=missed)
        self.records[key] = rec
        while len(self.records) > MAX_RECORDS:
            _, old = self.records.popitem(last=False)
            if old.timer is not None:
                old.timer.cancel()
            self._pending.discard(old)
        item = FeedbackItem(type="feedback", run=fb.run, index=fb.index, value=fb.value, late=fb.late)
        item.record = rec
        if at - now > 0.0005:
            rec.timer = asyncio.get_running_loop().call_later(at - now, self._release, rec, item)
        else:
            # consumers first, then one ack carrying every stamp made meanwhile (idle consumers take at once)
            self._quiet = rec
            try:
                self._release(rec, item)
            finally:
                self._quiet = None
        self.send_console({"type": "ack", "run": fb.run, "index": fb.index, "stamps": self.stamps(rec)})

    def _release(self, rec: Record, item: dict[str, Any]) -> None:
        rec.timer = None
        rec.released = time.monotonic()
        quiet, self._quiet = self._quiet, rec  # one report below, not one per consumer taking it now
        try:
            offered = self.hub.publish(item)
        finally:
            self._quiet = quiet
        rec.offered = len(offered)
        rec.waiting = {c for c in offered if c.name not in rec.consumers and c.name not in rec.dropped}
        if rec.waiting:
            self._pending.add(rec)  # the consumers' takes report it
        else:
            self._report(rec)  # taken at once, or nobody to take it: say so

    # ------------------------------------------------------------------ consumers -> agent

    def handle_consumer(self, consumer: Consumer, msg: dict[str, Any]) -> None:
        """A decoded message from a local consumer (already checked by :func:`protocol.decode`)."""
        kind = msg["type"]
        if kind == "response":
            data = {k: v for k, v in msg.items() if k != "type"}
            P.check_value(data, f"response from {consumer.name}")
            run = data.pop("run", None) or (self.current.run if self.current else None)
            # who sent it comes from the authenticated connection, never from the message
            self.send_console({"type": "response", "consumer": consumer.name, "consumer_kind": consumer.kind,
                               "run": run, "t": self.to_console(time.monotonic()), "data": data})
        elif kind == "displayed":
            rec = self.record(msg.get("run"), msg.get("index"))
            if rec is None:
                raise P.ProtocolError(
                    f"{consumer.name}: 'displayed' for unknown feedback run={msg.get('run')!r} "
                    f"index={msg.get('index')!r}"
                )
            rec.consumers.setdefault(consumer.name, {}).setdefault("displayed", time.monotonic())
            self._report(rec)
        elif kind == "hello":  # the connection's first line, checked before it joined (see local.py)
            raise P.ProtocolError(f"{consumer.name}: already said hello on this connection")
        elif kind == "ping":
            consumer.queue.put({"type": "pong", "t": msg.get("t")})

    def _taken(self, consumer: Consumer, item: dict[str, Any], t: float) -> None:
        rec = getattr(item, "record", None)
        if rec is None:
            return
        rec.consumers.setdefault(consumer.name, {}).setdefault("taken", t)
        self._settle(rec, consumer)
        self._report(rec)

    def _discarded(self, consumer: Consumer, item: dict[str, Any], why: str) -> None:
        rec = getattr(item, "record", None)
        if rec is None:
            return
        rec.dropped.setdefault(consumer.name, why)
        self._settle(rec, consumer)
        if not rec.waiting and not rec.taken_by:
            self._report(rec)  # the last consumer it was queued for will never take it

    def _settle(self, rec: Record, consumer: Consumer) -> None:
        rec.waiting.discard(consumer)
        if not rec.waiting:
            self._pending.discard(rec)

    def _consumers_changed(self) -> None:
        self.send_console(self.state())

    # ------------------------------------------------------------------ stamps -> console

    def stamps(self, rec: Record) -> dict[str, Any]:
        """Stamps of one value in the console's clock: the timeline stages plus per-consumer detail."""
        c = self.to_console
        taken = [v["taken"] for v in rec.consumers.values() if "taken" in v]
        shown = [v["displayed"] for v in rec.consumers.values() if "displayed" in v]
        out: dict[str, Any] = {"subject_delivered": c(rec.received)}
        if taken:
            out["consumer_taken"] = c(min(taken))
        if shown:
            out["displayed"] = c(min(shown))
        out["onset"] = c(rec.onset_at)  # when it was scheduled to go out
        out["released"] = c(rec.released)
        out["consumers"] = {name: {k: c(v) for k, v in d.items()} for name, d in rec.consumers.items()}
        out["outcome"] = rec.outcome
        out["taken_by"] = rec.taken_by
        if rec.dropped and not rec.taken_by:
            out["dropped"] = dict(rec.dropped)
        out["late"] = rec.late
        out["onset_missed"] = rec.onset_missed
        if rec.cancelled:
            out["cancelled"] = rec.cancelled
        return out

    def _report(self, rec: Record) -> None:
        if rec is self._quiet:
            return  # the ack that follows carries these stamps
        self.send_console({"type": "delivery", "run": rec.run, "index": rec.index, "stamps": self.stamps(rec)})

    async def close(self) -> None:
        for rec in self.records.values():
            if rec.timer is not None:
                rec.timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.hub.close()
