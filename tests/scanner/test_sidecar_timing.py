"""The run's SliceTiming when its first volumes disagree: as dcm2niix, the second volume's (a first file can
hold times off by a clock tick, or a CMRR multiband mosaic's single-band times). Convert's sidecar and the
recording's BIDS sidecar take it the same way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtcontrol.cli import main
from rtcontrol.recording import Recorder
from rtcontrol.scanner.reader import read_file
from rtcontrol.scanner.sidecar import consensus_timing
from tests.support.recording import run_settings

SERIES = "siemens_mosaic_ax_35sl"  # two volumes whose MosaicRefAcqTimes differ by up to 2.5 ms


def _expected(reference_root: Path) -> list[float]:
    return json.loads(next((reference_root / SERIES).glob("6_*.json")).read_text())["SliceTiming"]


def test_consensus_timing() -> None:
    assert consensus_timing([(0.0, 1.0), (0.0, 1.0005), (0.0, 1.0)]) == (0.0, 1.0)  # confirmed by its successor
    assert consensus_timing([(0.0, 0.5), (0.0, 1.0)]) == (0.0, 1.0)  # no agreement: the second's
    assert consensus_timing([(0.0, 0.5), None]) == (0.0, 0.5)
    assert consensus_timing([None]) is None and consensus_timing([]) is None


def test_convert_sidecar_slice_timing_is_dcm2niix_s(dicom_root: Path, reference_root: Path, tmp_path: Path) -> None:
    assert main(["convert", str(dicom_root / SERIES), "-o", str(tmp_path / "out")]) == 0
    (side,) = (tmp_path / "out").glob("*.json")
    assert json.loads(side.read_text())["SliceTiming"] == pytest.approx(_expected(reference_root), abs=1e-4)


def test_recorded_bids_slice_timing_is_dcm2niix_s(dicom_root: Path, reference_root: Path, tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "run", run_settings(tr=3.0))
    for f in sorted(p for p in (dicom_root / SERIES).iterdir() if p.name.startswith("MR")):
        rec.record_volume(read_file(f))
    bold = rec.finish()
    side = json.loads(bold.with_name(bold.name.replace(".nii.gz", ".json")).read_text())
    assert side["SliceTiming"] == pytest.approx(_expected(reference_root), abs=1e-4)
