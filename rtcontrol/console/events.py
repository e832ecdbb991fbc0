"""What the console controller tells its observers (the GUI, a test, the headless printer).

A tiny synchronous event bus: ``publish`` calls every subscriber in order, on the loop's
thread. Subscribers must be quick (the GUI only marks its views dirty and repaints on a
timer); one that raises is reported and skipped so it can never break a run.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rtcontrol.link.delivery import LinkState
from rtcontrol.scanner.volume import Timeline, Volume

log = logging.getLogger("rtcontrol.console")

class RunState(enum.StrEnum):
    """The console's run states, in the order a run goes through them."""

    IDLE = "idle"
    CONNECTING = "connecting"
    READY = "ready"
    RUNNING = "running"
    STOPPING = "stopping"
    ENDED = "ended"


IDLE, CONNECTING, READY, RUNNING = RunState.IDLE, RunState.CONNECTING, RunState.READY, RunState.RUNNING
STOPPING, ENDED = RunState.STOPPING, RunState.ENDED


@dataclass(frozen=True)
class StateChanged:
    state: RunState
    detail: str = ""


@dataclass(frozen=True)
class LogMessage:
    level: str  # "info", "warning", "error"
    text: str
    source: str = "console"
    time: float = field(default_factory=time.time)


@dataclass(frozen=True)
class VolumeArrived:
    """A new volume from the scanner (the GUI shows it; it is already on its way to the worker)."""

    volume: Volume


@dataclass(frozen=True)
class FeedbackArrived:
    """The worker's result for one volume."""

    run: str
    index: int
    value: Any
    metrics: dict[str, float | None]  # a project's metric may be None for a volume
    timeline: Timeline


@dataclass(frozen=True)
class Delivered:
    """The subject agent reported on a feedback value (its timeline has the subject-side stamps).

    ``outcome`` is the agent's word for it: "delivered" (a stimulus program took it: ``taken_by``),
    "no_consumer", "dropped", "cancelled", or while undecided "scheduled"/"pending"; "" from an agent
    that does not say (then only a ``consumer_taken`` stamp counts as delivered)."""

    run: str
    index: int
    timeline: Timeline
    late: bool = False
    outcome: str = ""
    taken_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConnectionChanged:
    """State of a link: ``name`` is "worker", "subject" or "afni"."""

    name: str
    state: LinkState  # as the operator sees it: off, connecting, connected, failed, closed
    url: str = ""
    detail: str = ""
    fingerprint: str = ""
    rtt_ms: float | None = None


@dataclass(frozen=True)
class ScannerStatus:
    """The watch folder's view: files and volumes seen, format and lateness."""

    folder: str
    files_seen: int
    volumes_seen: int
    source_format: str = ""
    series: str = ""
    since_last: float | None = None  # seconds since the last volume arrived


@dataclass(frozen=True)
class Lateness:
    """OpenNFT-style diagnostics: the scanner is slower than TR, or the analysis slower than TR."""

    kind: str  # "scanner" or "analysis"
    seconds: float
    index: int | None = None
    message: str = ""


@dataclass(frozen=True)
class RoiPlaced:
    """The project's region of interest is on the run's grid (``model.roi_mask``)."""

    voxels: int


@dataclass(frozen=True)
class DesignKnown:
    """The run's blocks/conditions as its project declared them (``model.design``), known at the run's start."""

    run: str
    conditions: tuple[str, ...]
    volumes: int  # the volume after the last block


@dataclass(frozen=True)
class MapArrived:
    """A statistical map of the run is in ``model.maps[name]`` (the t-map the live views overlay)."""

    run: str
    index: int
    name: str


@dataclass(frozen=True)
class ProjectsListed:
    projects: list[dict[str, Any]]


@dataclass(frozen=True)
class PluginsListed:
    """The worker's plugins (found at its start-up): ``plugins`` [{name, kind, source, description}],
    ``errors`` [{source, error, traceback}] for those that failed to load."""

    plugins: list[dict[str, Any]]
    errors: list[dict[str, Any]]


@dataclass(frozen=True)
class ProjectSettingsListed:
    project: str
    settings: list[dict[str, Any]]


@dataclass(frozen=True)
class RunEnded:
    run: str
    reason: str
    volumes: int
    feedback: int


Subscriber = Callable[[Any], None]


class EventBus:
    """Publish events to subscribers; ``subscribe`` returns a function that unsubscribes."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        self._subscribers.append(fn)

        def unsubscribe() -> None:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

        return unsubscribe

    def publish(self, event: Any) -> None:
        for fn in list(self._subscribers):
            try:
                fn(event)
            except Exception:  # an observer's bug must not stop the run
                log.exception("event subscriber %r failed on %s", fn, type(event).__name__)
