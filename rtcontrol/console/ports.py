"""The seams of the console controller: what it needs from the parts it drives.

The real implementations live in ``rtcontrol.scanner`` (watcher), ``rtcontrol.worker``
(worker link), ``rtcontrol.subject`` (subject agent link), ``rtcontrol.afni`` (sender) and
``rtcontrol.recording`` (recorder); :mod:`rtcontrol.console.links` adapts them to these
small protocols so the controller never depends on their constructors, and calls their methods
directly (no probing). Tests drive the controller through in-memory fakes of these protocols
(``tests/console/fakes.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from rtcontrol.scanner.volume import Timeline, Volume


class WatchStats(Protocol):
    """What the watcher has seen so far (``rtcontrol.scanner.watcher.WatchStats``)."""

    files_seen: int
    detected_format: str | None


class WatchEvent(Protocol):
    """Something about the watch folder the operator should know (``rtcontrol.scanner.watcher.WatchEvent``)."""

    kind: str  # new_run, run_end, file_error, gave_up, duplicate, gap, late, assembly
    path: Path | None
    message: str
    run: str | None


class Watcher(Protocol):
    @property
    def stats(self) -> WatchStats:
        """Read-only here, so the watcher's own stats class (with more fields) conforms."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class WorkerLink(Protocol):
    """The console's link to a worker (one run at a time)."""

    url: str

    @property
    def plugins(self) -> dict[str, Any] | None:
        """The worker's plugins as its last project list carried them: {"plugins": [...], "errors": [...]}."""
        ...

    async def list_projects(self) -> list[dict[str, Any]]: ...

    async def project_settings(self, project: str) -> list[dict[str, Any]]: ...

    async def start_run(self, run: str, project: str, settings: dict[str, Any], tr: float) -> dict[str, Any] | None:
        """Start the project's run; returns the worker's reply (``design``: the run's blocks, see
        :meth:`rtcontrol.project.Design.to_dict`), or None from a link that says nothing back."""

    async def send_volume(self, volume: Volume) -> None: ...

    async def send_response(self, response: dict[str, Any]) -> None:
        """A subject's response, for the running project."""
        ...

    async def stop_run(self) -> None: ...

    async def close(self) -> None: ...

    def refresh_status(self) -> None:
        """Publish the link's state again (its round-trip time changes)."""
        ...


class SubjectLink(Protocol):
    """The console's link to the subject agent."""

    url: str

    async def start_run(self, run: str, tr: float, onset: str, delay: float) -> None: ...

    async def send_feedback(self, run: str, index: int, value: Any, timeline: Timeline) -> None: ...

    async def send_message(self, message: dict[str, Any]) -> None: ...

    async def stop_run(self) -> None: ...

    async def close(self) -> None: ...

    def refresh_status(self) -> None: ...


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

    #: volumes written to disk so far (a run with none is discarded, not finished)
    written_volumes: int

    def drain(self) -> None:
        """Wait until everything queued so far is on disk (blocking: called in a thread)."""
        ...

    def close(self) -> None:
        """Stop writing without finishing (blocking: called in a thread)."""
        ...

    async def afinish(self) -> Any: ...
