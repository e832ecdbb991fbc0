"""Shared test fixtures: the real scanner series from ../shared/fixtures (read in place)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtcontrol.paths import fixtures_dir


@pytest.fixture(scope="session")
def fixtures_root() -> Path:
    root = fixtures_dir()
    if root is None:
        pytest.skip("shared scanner fixtures not found: set RTCONTROL_FIXTURES or place them at ../shared/fixtures")
    return root


@pytest.fixture(scope="session")
def dicom_root(fixtures_root: Path) -> Path:
    return fixtures_root / "dicom"


@pytest.fixture(scope="session")
def reference_root(fixtures_root: Path) -> Path:
    return fixtures_root / "reference"


@pytest.fixture(scope="session", autouse=True)
def private_rtcontrol_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tests never touch the real ~/.rtcontrol (pins, tokens, the consumer secret, the window layout):
    the whole session gets a home of its own unless RTCONTROL_HOME is already set; tests may still set theirs."""
    before = os.environ.get("RTCONTROL_HOME")
    home = Path(before) if before else tmp_path_factory.mktemp("rtcontrol-home")
    os.environ["RTCONTROL_HOME"] = str(home)
    yield home
    if before is None:
        os.environ.pop("RTCONTROL_HOME", None)
