"""Local consumers of feedback, each behind its own bounded queue.

The agent's main path only ever calls :meth:`ConsumerQueue.put`, which never blocks: a full queue drops
its oldest item (or, for a display that only needs the newest value, replaces the queued feedback) and
counts the loss. Each consumer drains its queue in its own task, so a slow or vanished stimulus program
never holds up the others or the console link. Every feedback item a consumer takes, and every one thrown
away before it took it (queue full, replaced by a newer value, consumer gone), is reported to the agent, so
a value is only ever called delivered when some consumer really took it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: Called when a consumer took a feedback item: (consumer, item, agent monotonic time).
TakenCallback = Callable[["Consumer", dict[str, Any], float], None]
#: Called when a feedback item queued for a consumer is thrown away untaken (queue full, replaced by a
#: newer value, consumer gone): (consumer, item, why).
DiscardCallback = Callable[["Consumer", dict[str, Any], str], None]


class ConsumerQueue:
    """A bounded FIFO whose ``put`` never blocks.

    ``coalesce=True`` keeps at most one feedback item (the newest) while leaving messages and run
    signals in order: a display that fell behind shows the latest value, not a backlog.
    """

    def __init__(self, maxsize: int = 256, *, coalesce: bool = False) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.coalesce = coalesce
        self.dropped = 0
        self.coalesced = 0
        self._items: deque[dict[str, Any]] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """Queue ``item``; returns the items thrown away to make room (usually none)."""
        gone: list[dict[str, Any]] = []
        if self.coalesce and item.get("type") == "feedback":
            for i, old in enumerate(self._items):
                if old.get("type") == "feedback":
                    gone.append(old)
                    del self._items[i]
                    self.coalesced += 1
                    break
        if len(self._items) >= self.maxsize:
            gone.append(self._items.popleft())
            self.dropped += 1
        self._items.append(item)
        self._ready.set()
        return gone

    def clear(self) -> list[dict[str, Any]]:
        """Empty the queue; returns what was in it."""
        items = list(self._items)
        self._items.clear()
        return items

    def unget(self, item: dict[str, Any]) -> None:
        """Put back an item taken but not delivered (the link dropped), at the front."""
        self._items.appendleft(item)
        self._ready.set()

    async def get(self) -> dict[str, Any]:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


class Consumer:
    """One stimulus program (or the built-in display); ``deliver`` may be slow, it runs in its own task."""

    kind = "consumer"
    _ids = itertools.count(1)

    def __init__(self, name: str | None = None, *, maxsize: int = 256, coalesce: bool = False) -> None:
        self.name = name or f"{self.kind}-{next(self._ids)}"
        self.queue = ConsumerQueue(maxsize, coalesce=coalesce)
        self.taken = 0
        self.busy = False  # inside deliver(): later items must queue behind it
        self.current: dict[str, Any] | None = None  # the item inside deliver()
        self.connected_at = time.monotonic()

    async def deliver(self, item: dict[str, Any]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def deliver_now(self, item: dict[str, Any]) -> bool:
        """Hand ``item`` over at once if that cannot block (e.g. room in a socket buffer); False if not."""
        return False

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "queued": len(self.queue),
            "taken": self.taken,
            "dropped": self.queue.dropped,
            "coalesced": self.queue.coalesced,
        }


class Hub:
    """Fans every item out to all consumers; never waits for any of them."""

    def __init__(self, on_taken: TakenCallback, on_change: Callable[[], None] | None = None,
                 on_discard: DiscardCallback | None = None) -> None:
        self._on_taken = on_taken
        self._on_change = on_change or (lambda: None)
        self._on_discard = on_discard or (lambda *_: None)
        self._tasks: dict[Consumer, asyncio.Task[None]] = {}

    @property
    def consumers(self) -> list[Consumer]:
        return list(self._tasks)

    def add(self, consumer: Consumer, initial: list[dict[str, Any]] | None = None) -> None:
        for item in initial or []:
            consumer.queue.put(item)
        self._tasks[consumer] = asyncio.create_task(self._pump(consumer), name=f"consumer {consumer.name}")
        log.info("consumer %s connected", consumer.name)
        self._on_change()

    def remove(self, consumer: Consumer) -> None:
        task = self._tasks.pop(consumer, None)
        if task is None:
            return
        try:
            current = asyncio.current_task()
        except RuntimeError:  # called from a Qt event (a window closing) while no loop runs
            current = None
        if task is not current:
            task.cancel()
        lost = consumer.queue.clear()
        if consumer.busy and consumer.current is not None:
            lost.insert(0, consumer.current)  # cancelled inside deliver(): not taken
        consumer.busy, consumer.current = False, None
        self._discarded(consumer, lost, "the consumer left before taking it")
        log.info("consumer %s left (took %d, dropped %d)", consumer.name, consumer.taken, consumer.queue.dropped)
        self._on_change()

    def publish(self, item: dict[str, Any]) -> list[Consumer]:
        """Queue ``item`` for every consumer; an idle consumer that can take it without blocking gets it now
        (saves a task switch on the common path). Returns the consumers that were offered it."""
        offered: list[Consumer] = []
        for consumer in list(self._tasks):
            if not len(consumer.queue) and not consumer.busy:
                try:
                    done = consumer.deliver_now(item)
                except Exception as exc:
                    log.warning("consumer %s failed and was removed: %s", consumer.name, exc)
                    self.remove(consumer)
                    continue
                if done:
                    offered.append(consumer)
                    self._took(consumer, item)
                    continue
            offered.append(consumer)
            self._discarded(consumer, consumer.queue.put(item), "replaced by a newer value or queue full")
        return offered

    def _took(self, consumer: Consumer, item: dict[str, Any]) -> None:
        if item.get("type") == "feedback":
            consumer.taken += 1
            self._on_taken(consumer, item, time.monotonic())

    def _discarded(self, consumer: Consumer, items: list[dict[str, Any]], why: str) -> None:
        for item in items:
            if item.get("type") == "feedback":
                self._on_discard(consumer, item, why)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _pump(self, consumer: Consumer) -> None:
        try:
            while True:
                item = await consumer.queue.get()
                consumer.busy, consumer.current = True, item
                await consumer.deliver(item)
                consumer.busy, consumer.current = False, None
                self._took(consumer, item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a consumer that breaks leaves; the others go on
            log.warning("consumer %s failed and was removed: %s", consumer.name, exc)
            self.remove(consumer)
