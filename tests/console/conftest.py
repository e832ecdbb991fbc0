"""A small synthetic run (real Siemens-mosaic DICOM from the scanner simulator), written once per session."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from rtcontrol.scanner.synth import SynthSpec, write_run

VOLUMES = 12


@pytest.fixture(scope="session")
def synth_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_run(SynthSpec(volumes=VOLUMES, tr=0.5, shape=(32, 32, 12), seed=3), out)
    return out


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
