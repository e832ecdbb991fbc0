"""The subject agent's core: what happens to a feedback value between the console and the consumers.

No sockets and no Qt here. The console's connection hands decoded messages to
:meth:`SubjectAgent.handle_console` and drains :attr:`SubjectAgent.outbox`; local consumers are
:class:`~rtcontrol.subject.consumers.Consumer` objects added to :attr:`SubjectAgent.hub` and pass what
they send back to :meth:`SubjectAgent.handle_consumer`.

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


@dataclass
class Record:
    """What happened to one feedback value here (agent clock)."""

    run: str
    index: int
    received: float
    late: bool
    onset_at: float
    released: float | None = None
    onset_missed: bool = False
    consumers: dict[str, dict[str, float]] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None
    cancelled: str | None = None


class SubjectAgent:
    """Receives feedback, schedules its onset, fans it out, and reports stamps and responses back."""

    def __init__(self) -> None:
        self.hub = Hub(self._taken, self._consumers_changed)
        self.outbox = ConsumerQueue(MAX_OUTBOX)
        self.offset = 0.0  # console clock = agent clock + offset
        self.runs: dict[str, P.RunSettings] = {}
        self.current: P.RunSettings | None = None
        self.records: OrderedDict[tuple[str, int], Record] = OrderedDict()
        self.errors = 0
        self._quiet: Record | None = None  # reports for this record wait for its ack

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
        self.runs[settings.run] = settings
        self.current = settings
        self.hub.publish({"type": "run_start", **settings.to_consumer()})
        self.send_console({"type": "run_started", "run": settings.run})
        log.info("run %s started (onset %s)", settings.run, settings.onset.mode)

    def _run_stop(self, run: Any) -> None:
        if run is not None and not isinstance(run, str):
            raise P.ProtocolError(f"run_stop 'run' must be a string, got {run!r}")
        run = run or (self.current.run if self.current else None)
        for rec in self.records.values():
            if rec.run == run and rec.timer is not None:
                rec.timer.cancel()
                rec.timer = None
                rec.cancelled = "run stopped before its onset"
                self._report(rec)
        if self.current and self.current.run == run:
            self.current = None
        self.hub.publish({"type": "run_stop", "run": run})
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
        key = (fb.run, fb.index)
        rec = self.records.get(key)
        if rec is not None:  # a resend of something we already have: acknowledge, never deliver twice
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
        rec = Record(fb.run, fb.index, now, fb.late, at, onset_missed=missed)
        self.records[key] = rec
        while len(self.records) > MAX_RECORDS:
            _, old = self.records.popitem(last=False)
            if old.timer is not None:
                old.timer.cancel()
        item = {"type": "feedback", "run": fb.run, "index": fb.index, "value": fb.value, "late": fb.late}
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
        self.hub.publish(item)
        if not self.hub.consumers:
            self._report(rec)  # nobody to take it: still tell the console it went out

    # ------------------------------------------------------------------ consumers -> agent

    def handle_consumer(self, consumer: Consumer, msg: dict[str, Any]) -> None:
        """A decoded message from a local consumer (already checked by :func:`protocol.decode`)."""
        kind = msg["type"]
        if kind == "response":
            data = {k: v for k, v in msg.items() if k != "type"}
            P.check_value(data, f"response from {consumer.name}")
            run = data.pop("run", None) or (self.current.run if self.current else None)
            self.send_console({"type": "response", "consumer": consumer.name, "run": run,
                               "t": self.to_console(time.monotonic()), "data": data})
        elif kind == "displayed":
            rec = self.records.get((msg.get("run"), msg.get("index")))  # type: ignore[arg-type]
            if rec is None:
                raise P.ProtocolError(
                    f"{consumer.name}: 'displayed' for unknown feedback run={msg.get('run')!r} "
                    f"index={msg.get('index')!r}"
                )
            rec.consumers.setdefault(consumer.name, {}).setdefault("displayed", time.monotonic())
            self._report(rec)
        elif kind == "hello":  # {"type": "hello", "name": "psychopy"}: name this consumer in the stamps
            name = msg.get("name")
            if not isinstance(name, str) or not name or len(name) > 40 or not name.replace("-", "").replace(
                    "_", "").isalnum():
                raise P.ProtocolError(f"{consumer.name}: hello 'name' must be 1-40 letters, digits, - or _")
            consumer.name = f"{name}-{consumer.name.rsplit('-', 1)[-1]}"
            consumer.queue.put({"type": "hello", "protocol": P.PROTOCOL, "consumer": consumer.name})
            self._consumers_changed()
        elif kind == "ping":
            consumer.queue.put({"type": "pong", "t": msg.get("t")})

    def _taken(self, name: str, run: str, index: int, t: float) -> None:
        rec = self.records.get((run, index))
        if rec is None:
            return
        rec.consumers.setdefault(name, {}).setdefault("taken", t)
        self._report(rec)

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
        await self.hub.close()
