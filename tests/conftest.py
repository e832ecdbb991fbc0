"""Shared test fixtures: the real scanner series from ../shared/fixtures (read in place)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtcontrol.paths import fixtures_dir

SERIES = (
    "ge_epi_nih_10vol",
    "philips_epi_magdeburg",
    "siemens_mosaic_ax_35sl",
    "siemens_mosaic_ep2d_int_6vol",
    "siemens_mosaic_ep2d_int_HF_6vol",
    "siemens_xa30_enhanced_bold_20vol",
    "ge_hyperband_hb3_48sl",
    "siemens_xa60_enhanced_sms2",
)


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
