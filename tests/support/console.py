"""Helpers for console tests: a scan played into a watch folder, a run killed mid-recording."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

VOLUMES = 12


def series_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix != ".json")


async def scan_into(source: Path, watch: Path, interval: float = 0.05) -> int:
    """A scanner writing one file per volume: a temporary name, then renamed (as Siemens exports do)."""
    files = series_files(source)
    for f in files:
        tmp = watch / (f.name + ".part")
        shutil.copyfile(f, tmp)
        tmp.rename(watch / f.name)
        await asyncio.sleep(interval)
    return len(files)


#: A console recording three volumes of a run, then killed (SIGKILL: no finish, no clean-up).
_KILLED_RECORDING = """
import os, signal, sys
from rtcontrol.console.settings import RunSettings
from rtcontrol.recording.recorder import Recorder
from rtcontrol.scanner.synth import SynthSpec, generate

s = RunSettings().with_values("run", subject="killed", tr=1.0, expected_volumes=10)
run = generate(SynthSpec(volumes=3, tr=1.0, shape=(16, 16, 10), seed=4))
rec = Recorder(os.path.join(sys.argv[1], s.run_id), s.to_dict())
for t in range(3):
    rec.record_volume(run.to_volume(t, run=s.run_id))
rec.drain()
os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_run(runs_dir: Path) -> Path:
    """A run folder as a console killed mid-run leaves it (journal and raw volumes, no BIDS)."""
    import signal
    import subprocess
    import sys

    runs_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-c", _KILLED_RECORDING, str(runs_dir)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    return runs_dir / "sub-killed_ses-01_task-feedback_run-01"
