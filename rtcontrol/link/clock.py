"""Clock offset between two hosts from ping/pong, NTP style (sans-I/O).

The client stamps ``t0`` (its clock) and sends a ping; the server stamps ``t1`` on receipt and
``t2`` on reply (its clock); the client stamps ``t3`` on receipt. Then::

    rtt    = (t3 - t0) - (t2 - t1)
    offset = ((t1 - t0) + (t2 - t3)) / 2      # server clock minus client clock

The sample with the smallest round trip among the recent ones is the least disturbed by
queueing, so its offset is used. A server stamp ``s`` is ``s - offset`` on the client clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class ClockSync:
    window: int = 32
    _samples: deque = field(default_factory=deque)  # (rtt, offset)

    def add(self, t0: float, t1: float, t2: float, t3: float) -> tuple[float, float]:
        """Record one ping/pong; return its (rtt, offset)."""
        rtt = max(0.0, (t3 - t0) - (t2 - t1))
        offset = ((t1 - t0) + (t2 - t3)) / 2.0
        self._samples.append((rtt, offset))
        while len(self._samples) > self.window:
            self._samples.popleft()
        return rtt, offset

    @property
    def ready(self) -> bool:
        return bool(self._samples)

    @property
    def offset(self) -> float:
        """Server minus client clock (seconds), from the min-RTT sample; 0 before any sample."""
        return min(self._samples)[1] if self._samples else 0.0

    @property
    def rtt(self) -> float | None:
        """The latest round-trip time (seconds)."""
        return self._samples[-1][0] if self._samples else None

    @property
    def min_rtt(self) -> float | None:
        return min(self._samples)[0] if self._samples else None

    def to_local(self, remote_stamp: float) -> float:
        return remote_stamp - self.offset
