"""In-memory fakes of the controller's ports (:mod:`rtcontrol.console.ports`), as httpx's MockTransport.

They implement the protocols with no socket, process or thread, and write every call into one shared
``journal`` so a test can check the order across parts (watcher, worker, subject agent, recorder).
The fake worker answers each volume with feedback (``float(index)``) on the next loop pass, as a
worker's event would arrive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rtcontrol.console.controller import ConsoleController
from rtcontrol.scanner.volume import Timeline, Volume

Journal = list[tuple[Any, ...]]


def volume(index: int) -> Volume:
    return Volume(data=np.full((4, 4, 3), index, dtype=np.int16), affine=np.eye(4), run="scanner", index=index,
                  tr=0.5)


class FakeWorker:
    """A ``WorkerLink`` that computes ``float(index)`` for every volume."""

    url = "fake://worker"
    plugins: dict[str, Any] | None = None

    def __init__(self, controller: ConsoleController, journal: Journal, refuse: Exception | None = None) -> None:
        self.c, self.journal, self.refuse = controller, journal, refuse
        self.run = ""
        self.responses: list[dict[str, Any]] = []

    async def list_projects(self) -> list[dict[str, Any]]:
        return [{"name": "fake"}]

    async def project_settings(self, project: str) -> list[dict[str, Any]]:
        return []

    async def start_run(self, run: str, project: str, settings: dict[str, Any], tr: float) -> None:
        self.journal.append(("worker.start_run", run))
        if self.refuse is not None:
            raise self.refuse
        self.run = run

    async def send_volume(self, volume: Volume) -> None:
        self.journal.append(("worker.volume", volume.index))
        timeline = Timeline.from_dict(volume.timeline.to_dict())
        asyncio.get_running_loop().call_soon(
            self.c.handle_feedback, self.run, volume.index, float(volume.index), {"fd": 0.0}, timeline)

    async def send_response(self, response: dict[str, Any]) -> None:
        self.responses.append(response)

    async def stop_run(self) -> None:
        await asyncio.sleep(0)  # the last feedback event comes in before the reply
        self.journal.append(("worker.stop_run",))

    async def close(self) -> None:
        self.journal.append(("worker.close",))

    def refresh_status(self) -> None:
        pass


class FakeSubject:
    """A ``SubjectLink`` that takes everything."""

    url = "fake://subject"

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def start_run(self, run: str, tr: float, onset: str, delay: float) -> None:
        self.journal.append(("subject.start_run", run, onset))

    async def send_feedback(self, run: str, index: int, value: Any, timeline: Timeline) -> None:
        self.journal.append(("subject.feedback", index, value))

    async def send_message(self, message: dict[str, Any]) -> None:
        self.journal.append(("subject.message", message.get("text")))

    async def stop_run(self) -> None:
        self.journal.append(("subject.stop_run",))

    async def close(self) -> None:
        self.journal.append(("subject.close",))

    def refresh_status(self) -> None:
        pass


@dataclass
class FakeStats:
    files_seen: int = 0
    detected_format: str | None = None


class FakeWatcher:
    """A ``Watcher`` the test feeds by hand; ``held`` volumes are handed over when it stops (as the real
    watcher does with files it was still reading)."""

    def __init__(self, journal: Journal, on_volume: Callable[[Volume], Any], on_event: Callable[[Any], Any]) -> None:
        self.journal, self.on_volume, self.on_event = journal, on_volume, on_event
        self.stats = FakeStats()
        self.held: list[Volume] = []

    async def start(self) -> None:
        self.journal.append(("watcher.start",))

    async def stop(self) -> None:
        self.journal.append(("watcher.stop",))
        for v in self.held:
            self.feed(v)

    def feed(self, v: Volume) -> None:
        self.stats.files_seen += 1
        self.on_volume(v)


@dataclass
class FakeRecorder:
    """A ``Recorder`` that writes nothing; ``fail_on`` makes that method raise."""

    journal: Journal
    fail_on: str = ""
    written_volumes: int = 0
    events: list[tuple[str, str]] = field(default_factory=list)

    def _call(self, name: str, *args: Any) -> None:
        if name == self.fail_on:
            raise OSError(f"disk full ({name})")
        self.journal.append((f"recorder.{name}", *args))

    def record_volume(self, volume: Volume) -> None:
        self._call("record_volume", volume.index)
        self.written_volumes += 1

    def record_feedback(self, run: str, index: int, feedback: Any, metrics: Any, timeline: Any) -> None:
        self._call("record_feedback", index)

    def record_timeline(self, run: str, index: int, timeline: Any) -> None:
        self._call("record_timeline", index)

    def record_response(self, value: Any, when: float | None = None, **data: Any) -> None:
        self._call("record_response", value)

    def record_event(self, kind: str, message: str, **data: Any) -> None:
        self.events.append((kind, message))

    def drain(self) -> None:
        self._call("drain")

    def close(self) -> None:
        self._call("close")

    async def afinish(self) -> Path:
        self._call("afinish")
        return Path("fake-bids")


@dataclass
class Rig:
    """A controller wired to the fakes."""

    controller: ConsoleController
    journal: Journal
    worker: FakeWorker
    subject: FakeSubject
    recorder: FakeRecorder
    watchers: list[FakeWatcher]

    @property
    def watcher(self) -> FakeWatcher:
        return self.watchers[-1]

    def names(self, prefix: str = "") -> list[tuple[Any, ...]]:
        return [entry for entry in self.journal if entry[0].startswith(prefix)]
