"""The delivery core both console links share, with no asyncio and no sockets.

The console's link to the worker (:mod:`rtcontrol.worker.client`) and to the subject agent
(:mod:`rtcontrol.subject.link`) promise the same things: what was queued goes out in order, every
item the peer has not acknowledged goes out again after a reconnect (and only once per connection),
requests not yet answered are sent again on a new connection, messages queued while the link is down
go first when it returns, a peer that lost our session loses what it had not acknowledged (and we say
what), a busy peer is waited for as long as it asks, and a refused certificate or token ends retrying.

:class:`Outbox` holds the queued items and their states; :class:`Redial` decides what a failed dial
means. Both take events (``connected()``, ``queue()``, ``ack()``, ``failed(exc)``...) and return what
to send or how long to wait, like the websockets library's protocol core; the clients do the I/O
(:mod:`rtcontrol.link.reconnect` is the one reconnect loop). That is why they are tested by feeding
them events (``tests/link/test_delivery.py``).
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from rtcontrol.link.pinning import PinError
from rtcontrol.link.transport import AuthError, LinkError, Throttled, ThrottleNotice

K = TypeVar("K", bound=Hashable)


class LinkState(enum.StrEnum):
    """A console link's state, the same words for the worker, the subject agent and the console's view."""

    OFF = "off"  # not used in this session
    CONNECTING = "connecting"  # the first connection, or a new one after a drop
    RESYNCING = "resyncing"  # connected again; resending what the peer has not acknowledged
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"  # the connection dropped; dialling again with backoff
    DISCONNECTED = "disconnected"  # not connected (never was, or between attempts)
    CLOSED = "closed"  # closed on purpose
    FAILED = "failed"  # it stopped trying: a refused certificate or token, or it could not start

    @property
    def shown(self) -> LinkState:
        """The operator's word for it: every attempt to (re)connect is "connecting", a link down "closed"."""
        return _SHOWN.get(self, self)


_SHOWN = {LinkState.RESYNCING: LinkState.CONNECTING, LinkState.RECONNECTING: LinkState.CONNECTING,
          LinkState.DISCONNECTED: LinkState.CLOSED}


class Kind(enum.StrEnum):
    """What an outgoing frame is, so a client can mark it (the subject link marks resent feedback late)."""

    MESSAGE = "message"  # one-shot: queued while down, sent once when the link returns
    REQUEST = "request"  # sent again on every new connection until it is answered
    ITEM = "item"  # sent again on every new connection until the peer acknowledges it


@dataclass(frozen=True)
class Send:
    """One frame to send now. ``resend`` is true when it went out on an earlier connection."""

    kind: Kind
    key: Any
    frame: Any
    resend: bool = False


class _Entry:
    __slots__ = ("frame", "sent_on")

    def __init__(self, frame: Any) -> None:
        self.frame, self.sent_on = frame, 0  # connection number it last went out on; 0: never


class Outbox(Generic[K]):
    """Items awaiting acknowledgement, requests awaiting replies and messages awaiting a connection.

    Connections are numbered; each entry remembers the one it last went out on, so :meth:`flush`
    after a reconnect sends everything still open exactly once on the new connection, in order:
    messages first, then requests, then items. ``limit`` bounds the items kept (the oldest go first
    and are counted in :attr:`dropped`); ``backlog`` bounds the messages kept while down.
    """

    def __init__(self, limit: int | None = None, backlog: int | None = None) -> None:
        self.limit = limit
        self._items: OrderedDict[K, _Entry] = OrderedDict()
        self._requests: dict[Hashable, _Entry] = {}
        self._messages: deque[Any] = deque(maxlen=backlog)
        self.connection = 0  # number of the current (or last) connection
        self.ready = False  # connected and flushed: new frames go out at once
        self.dropped = 0  # items dropped over ``limit``
        self.resent = 0  # items sent again on a later connection

    # ------------------------------------------------------------------ events from the client
    def connected(self) -> None:
        """A new connection is up; nothing goes out on it before :meth:`flush`."""
        self.connection += 1
        self.ready = False

    def flush(self) -> list[Send]:
        """Everything not yet sent on this connection, in order.

        Call it again after sending (more may have been queued meanwhile): once it finds nothing left,
        the link is :attr:`ready` and new frames go out at once, never ahead of older ones."""
        out = [Send(Kind.MESSAGE, None, m) for m in self._messages]
        self._messages.clear()
        for rid, entry in self._requests.items():
            if entry.sent_on != self.connection:
                out.append(Send(Kind.REQUEST, rid, entry.frame, entry.sent_on != 0))
                entry.sent_on = self.connection
        for key, entry in self._items.items():
            if entry.sent_on != self.connection:
                resend = entry.sent_on != 0
                self.resent += resend
                out.append(Send(Kind.ITEM, key, entry.frame, resend))
                entry.sent_on = self.connection
        self.ready = not out
        return out

    def disconnected(self) -> None:
        """The connection dropped: queue from now on; what is open goes out again after :meth:`connected`."""
        self.ready = False

    def session_lost(self) -> list[K]:
        """The peer no longer knows our session: the items it had not acknowledged are gone. Returns their keys."""
        lost = list(self._items)
        self._items.clear()
        return lost

    # ------------------------------------------------------------------ items (acknowledged)
    def queue(self, key: K, frame: Any, *, replace: bool = False) -> Send | None:
        """Queue an item; returns it to send now when the link is ready.

        An item already queued under ``key`` is kept as it is, unless ``replace`` (then the new frame
        takes its place, keeps its position and goes out again)."""
        entry = self._items.get(key)
        if entry is not None and not replace:
            return None
        if entry is None:
            entry = self._items[key] = _Entry(frame)
            while self.limit is not None and len(self._items) > self.limit:
                self._items.popitem(last=False)
                self.dropped += 1
            if key not in self._items:
                return None
        entry.frame, entry.sent_on = frame, 0
        return self._now(Kind.ITEM, key, entry)

    def send_item(self, key: K) -> Send | None:
        """The client sends this open item itself now (ahead of :meth:`flush`, e.g. a replay in index
        order); None if it is not open or already went out on this connection."""
        entry = self._items.get(key)
        if entry is None or entry.sent_on == self.connection:
            return None
        resend = entry.sent_on != 0
        self.resent += resend
        entry.sent_on = self.connection
        return Send(Kind.ITEM, key, entry.frame, resend)

    def ack(self, key: K) -> bool:
        """The peer has the item; returns whether it was still open."""
        return self._items.pop(key, None) is not None

    def forget(self, key: K) -> None:
        self._items.pop(key, None)

    @property
    def unacked(self) -> dict[K, Any]:
        """The open items' frames by key, oldest first."""
        return {k: e.frame for k, e in self._items.items()}

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    # ------------------------------------------------------------------ requests (answered)
    def request(self, rid: Hashable, frame: Any) -> Send | None:
        """Register a request; returns it to send now when the link is ready."""
        entry = self._requests[rid] = _Entry(frame)
        return self._now(Kind.REQUEST, rid, entry)

    def replied(self, rid: Hashable) -> bool:
        """The request was answered (or given up): it is not sent again. Returns whether it was open."""
        return self._requests.pop(rid, None) is not None

    def sent_here(self, rid: Hashable) -> bool:
        """Whether the request already went out on the current connection."""
        entry = self._requests.get(rid)
        return entry is not None and entry.sent_on == self.connection

    def mark_sent(self, rid: Hashable) -> Any:
        """The client sends a request itself (ahead of :meth:`flush`); returns its frame."""
        entry = self._requests[rid]
        entry.sent_on = self.connection
        return entry.frame

    @property
    def open_requests(self) -> list[Hashable]:
        return list(self._requests)

    # ------------------------------------------------------------------ one-shot messages
    def post(self, frame: Any) -> Send | None:
        """A message with no acknowledgement: returned to send now when ready, else kept for the next connection."""
        if self.ready:
            return Send(Kind.MESSAGE, None, frame)
        self._messages.append(frame)
        return None

    def keep(self, frame: Any) -> None:
        """A message that could not go out now after all: it goes first on the next flush."""
        self._messages.append(frame)

    # ------------------------------------------------------------------ helpers
    def _now(self, kind: Kind, key: Any, entry: _Entry) -> Send | None:
        if not self.ready:
            return None
        entry.sent_on = self.connection
        return Send(kind, key, entry.frame)


@dataclass(frozen=True)
class Wait:
    """After a failed dial: wait ``delay`` seconds, and say ``notice`` if not None."""

    delay: float
    notice: str | None
    error: str
    throttled: bool = False  # the peer is busy (it said how long to wait)


class Redial:
    """What a failed connection attempt means: a fatal refusal, a busy peer, or a try again later.

    ``failed(exc)`` re-raises a refused certificate (:class:`PinError`) or token (:class:`AuthError`): a
    link never retries those. A busy peer (:class:`Throttled`, HTTP 429/503) is waited for as long as it
    asks, said once per episode; any other link or network error doubles the wait up to ``cap``.
    ``succeeded()`` after a connection starts over.

    A first connection (the operator is waiting for it) is dialled with ``retry_errors=False``: an
    unreachable peer is said at once, and a busy one is waited for up to ``budget`` seconds in all."""

    FATAL = (PinError, AuthError)

    def __init__(self, who: str, first: float, cap: float, *, retry_errors: bool = True,
                 budget: float | None = None) -> None:
        self.first, self.cap = first, cap
        self.retry_errors, self.budget = retry_errors, budget
        self.delay = first
        self.throttle = ThrottleNotice(who)
        self.attempts = 0
        self.waited = 0.0  # seconds of Throttled waits since the last connection

    def failed(self, exc: BaseException) -> Wait:
        self.attempts += 1
        if isinstance(exc, self.FATAL):
            raise exc
        if isinstance(exc, Throttled):
            delay, notice = self.throttle.wait(exc)
            if self.budget is not None and self.waited + delay > self.budget:
                raise exc
            self.waited += delay
            return Wait(delay, notice, str(exc), throttled=True)
        if isinstance(exc, (LinkError, OSError)) and self.retry_errors:
            delay, self.delay = self.delay, min(self.delay * 2, self.cap)
            return Wait(delay, None, str(exc))
        raise exc

    def succeeded(self) -> None:
        self.delay = self.first
        self.waited = 0.0
        self.throttle.clear()
