"""What a console link tells its owner: one callback, ``on_event(event)``, with one of these events.

The worker link (:class:`rtcontrol.worker.client.WorkerClient`) sends :class:`StateChanged`,
:class:`Problem`, :class:`FeedbackEvent`, :class:`MapEvent`, :class:`LogLine`, :class:`SubjectMessage` and
:class:`RunChanged`; the subject link (:class:`rtcontrol.subject.link.SubjectClient`) sends
:class:`StateChanged`, :class:`Problem`, :class:`Delivery` and :class:`Response`. Owners match on the
type (``match event: case Delivery(): ...``) and ignore what they do not need.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtcontrol.link.delivery import LinkState
from rtcontrol.scanner.volume import Timeline


class RunChange(enum.StrEnum):
    """What happened to the worker's run, as the worker link reports it."""

    ENDED = "ended"
    FAILED = "failed"
    RESTARTING = "restarting"  # the worker restarted mid-run: the run is being started again there
    RESTARTED = "restarted"  # started again; the volumes so far are being replayed (info says which)


@dataclass(frozen=True)
class StateChanged:
    """The link's state changed (or was re-said with fresher details).

    ``error`` says why a link is down or failed; ``agent`` is the subject agent's own report (its
    ``run`` and ``consumers``) when it gave one."""

    state: LinkState
    error: str = ""
    fingerprint: str = ""
    agent: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """The peer refused or failed something (``traceback`` holds a project's traceback if any)."""

    message: str
    traceback: str = ""


@dataclass
class FeedbackEvent:
    """The worker's result for one volume."""

    run: str
    index: int
    feedback: Any
    metrics: dict[str, float | None]
    timeline: Timeline  # every stamp in the console's clock
    worker_timeline: dict[str, float] = field(default_factory=dict)  # raw, worker's clock


@dataclass(frozen=True)
class MapEvent:
    """A statistical map the project returned with volume ``index`` (``data`` on ``affine``'s grid, float16 as
    sent; ``peak`` its largest |value|)."""

    run: str
    index: int
    name: str
    data: np.ndarray
    affine: np.ndarray
    peak: float


@dataclass(frozen=True)
class LogLine:
    """A line of the project's log on the worker."""

    run: str | None
    level: str
    message: str


@dataclass(frozen=True)
class SubjectMessage:
    """A message the project sends to the subject's screen (through the console)."""

    run: str | None
    message: Any


@dataclass(frozen=True)
class RunChanged:
    run: str
    state: RunChange
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Delivery:
    """The subject agent's word on one feedback value (``stamps``: see :mod:`rtcontrol.subject.link`)."""

    run: str
    index: int
    stamps: dict[str, Any]


@dataclass(frozen=True)
class Response:
    """A stimulus program's response: ``{"consumer", "consumer_kind", "run", "t", "data"}``."""

    response: dict[str, Any]


LinkEvent = (StateChanged | Problem | FeedbackEvent | MapEvent | LogLine | SubjectMessage | RunChanged | Delivery
             | Response)


def route(handlers: Mapping[type, Callable[[Any], Any]]) -> Callable[[LinkEvent], Any]:
    """One ``on_event`` callback from a handler per event type; events of other types are ignored."""

    def on_event(event: LinkEvent) -> Any:
        handler = handlers.get(type(event))
        return None if handler is None else handler(event)

    return on_event
