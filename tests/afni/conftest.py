"""Fixtures for the AFNI sender tests: the rtfeedme / motion-channel captures, read in place."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def afni_fixtures(fixtures_root: Path) -> Path:
    root = fixtures_root / "afni"
    if not root.is_dir():
        pytest.skip(f"AFNI captures not found at {root}")
    return root


@pytest.fixture(scope="session")
def rtfeedme_dir(afni_fixtures: Path) -> Path:
    return afni_fixtures / "rtfeedme"


@pytest.fixture(scope="session")
def motion_dir(afni_fixtures: Path) -> Path:
    return afni_fixtures / "motion_channel"
