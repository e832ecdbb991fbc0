"""A small synthetic run (real Siemens-mosaic DICOM from the scanner simulator), written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtcontrol.scanner.synth import SynthSpec, write_run
from tests.support.console import VOLUMES


@pytest.fixture(scope="session")
def synth_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_run(SynthSpec(volumes=VOLUMES, tr=0.5, shape=(32, 32, 12), seed=3), out)
    return out


