"""Where rtcontrol's own files are: the checkout, or the PyInstaller bundle."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def app_root() -> Path:
    """The folder holding ``resources/``, ``projects/`` and ``plugins/``."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle)
    return Path(__file__).resolve().parent.parent


def resources_dir() -> Path:
    return app_root() / "resources"


def projects_dir() -> Path:
    return app_root() / "projects"


def plugins_dir() -> Path:
    return app_root() / "plugins"


def fixtures_dir() -> Path | None:
    """The shared scanner fixtures: ``$RTCONTROL_FIXTURES`` or ``../shared/fixtures``; None if absent."""
    env = os.environ.get("RTCONTROL_FIXTURES")
    candidates = [Path(env)] if env else []
    candidates.append(app_root().parent / "shared" / "fixtures")
    for c in candidates:
        if (c / "dicom").is_dir():
            return c
    return None


def user_data_dir() -> Path:
    """Per-user state (pinned fingerprints, tokens, window layout): ``$RTCONTROL_HOME`` or ``~/.rtcontrol``."""
    base = os.environ.get("RTCONTROL_HOME")
    path = Path(base) if base else Path.home() / ".rtcontrol"
    path.mkdir(parents=True, exist_ok=True)
    return path
