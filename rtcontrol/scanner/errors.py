"""Why a file in the watch folder did not become (part of) a volume; each says what and where."""

from __future__ import annotations

from pathlib import Path

from rtcontrol.errors import RtcontrolError


class IngestError(RtcontrolError):
    """A file could not be used. ``path`` says where, the message says what."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class IncompleteFile(IngestError):
    """Still being written (truncated, pixel bytes missing): try again shortly."""


class ForeignFile(IngestError):
    """Not a scanner image we read (a text file, a report, a localizer...): skip it."""


class CorruptFile(IngestError):
    """Looks like an image but cannot be read even when complete: report and skip it."""
