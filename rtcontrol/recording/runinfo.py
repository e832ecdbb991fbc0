"""What the recorder and the BIDS writer share: the recording's error, and a run folder's ``run.json``
(settings minus secrets and local paths, start time). Below both, so neither imports the other for it."""

from __future__ import annotations

import errno
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rtcontrol import __version__
from rtcontrol.errors import RtcontrolError
from rtcontrol.recording.journal import FORMAT_VERSION

SETTINGS_FILE = "run.json"


class RecordingError(RtcontrolError):
    """The run cannot be (or could not be) recorded; the message says where and what to do."""


def describe_os_error(exc: OSError, where: Path | str) -> str:
    """A sentence an operator can act on."""
    if exc.errno == errno.ENOSPC:
        return (f"the disk holding {where} is full: free space there "
                "(volumes are not recorded until there is room again)")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write to {where} ({exc.strerror}): choose a writable recording folder"
    return f"writing {where} failed: {exc.strerror or exc}"


#: Words in a setting's key that keep it out of the saved run: secrets and local paths (a scanner's
#: export folder is often named after the patient).
_PRIVATE_WORDS = frozenset(
    {"token", "tokens", "secret", "password", "key", "patient", "folder", "folders", "path", "paths", "dir",
     "directory"}
)


def public_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings minus secrets and local paths, safe to keep with de-identified data."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        words = set(str(key).lower().replace("-", "_").split("_"))
        if words & _PRIVATE_WORDS or "patient" in str(key).lower():
            continue
        out[key] = public_settings(value) if isinstance(value, dict) else value
    return out


def run_info(settings: dict[str, Any]) -> dict[str, Any]:
    """The ``run.json`` a new run folder starts with."""
    return {
        "rtcontrol": __version__,
        "format": FORMAT_VERSION,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": public_settings(settings),
    }


def load_run_info(run_dir: Path | str) -> dict[str, Any]:
    """The ``run.json`` of a run folder (settings, start time); empty if missing."""
    path = Path(run_dir) / SETTINGS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
