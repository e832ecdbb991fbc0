"""Fixtures of the fault suite: one synthetic series for every scenario, and a rig whose processes are all
killed at the end of each test, whatever happened."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .procs import MAIN, Rig

#: Volumes in the shared series (a scenario replays the first N).
SERIES_VOLUMES = 150


@pytest.fixture(scope="session")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic Siemens-mosaic run written by ``main.py synth`` (small volumes: the faults are the point)."""
    out = tmp_path_factory.mktemp("series")
    subprocess.run([sys.executable, str(MAIN), "synth", str(out), "--volumes", str(SERIES_VOLUMES), "--tr", "0.4",
                    "--shape", "32,32,12", "--seed", "7"], check=True, capture_output=True, timeout=120)
    return out


@pytest.fixture
async def rig(tmp_path: Path):
    r = Rig(tmp_path)
    try:
        yield await r.setup()
    finally:
        await r.close()
