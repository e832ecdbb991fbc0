"""The seams of the console controller: what it needs from the parts it drives.

The real implementations live in ``rtcontrol.scanner`` (watcher), ``rtcontrol.worker``
(worker link), ``rtcontrol.subject`` (subject agent link), ``rtcontrol.afni`` (sender) and
``rtcontrol.recording`` (recorder); :mod:`rtcontrol.console.links` adapts them to these
small protocols so the controller never depends on their constructors.
"""

from __future__ import annotations

from typing import Any, Protocol

from rtcontrol.scanner.volume import Timeline, Volume


class Watcher(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class WorkerLink(Protocol):
    """The console's link to a worker (one run at a time)."""

    url: str

    async def list_projects(self) -> list[dict[str, Any]]: ...

    async def project_settings(self, project: str) -> list[dict[str, Any]]: ...

    async def start_run(self, run: str, project: str, settings: dict[str, Any], tr: float) -> None: ...

    async def send_volume(self, volume: Volume) -> None: ...

    async def stop_run(self) -> None: ...

    async def close(self) -> None: ...


class SubjectLink(Protocol):
    """The console's link to the subject agent."""

    url: str

    async def start_run(self, run: str, tr: float, onset: str, delay: float) -> None: ...

    async def send_feedback(self, run: str, index: int, value: Any, timeline: Timeline) -> None: ...

    async def send_message(self, message: dict[str, Any]) -> None: ...

    async def stop_run(self) -> None: ...

    async def close(self) -> None: ...


class VolumeSink(Protocol):
    """Something that takes every volume as it arrives (the AFNI sender)."""

    async def send_volume(self, volume: Volume) -> None: ...

    async def close(self) -> None: ...


class Recorder(Protocol):
    """Writes the run as it happens (journal + raw volumes), BIDS at the end (``rtcontrol.recording``)."""

    def record_volume(self, volume: Volume) -> None: ...

    def record_feedback(
        self, run: str, index: int, feedback: Any, metrics: dict[str, Any] | None, timeline: Timeline | dict
    ) -> None: ...

    def record_timeline(self, run: str, index: int, timeline: Timeline | dict) -> None: ...

    def record_response(self, value: Any, when: float | None = None, **data: Any) -> None: ...

    def record_event(self, kind: str, message: str, **data: Any) -> None: ...

    async def afinish(self) -> Any: ...
