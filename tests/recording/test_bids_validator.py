"""The BIDS output passes the official validator (npm bids-validator 1.x), for synthetic and real scanner runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rtcontrol.recording import Recorder
from rtcontrol.scanner.synth import SynthRun
from tests.support.recording import issues, record, run_settings, validate

#: The first test installs the pinned validator with npm (about a minute on this machine).
pytestmark = pytest.mark.timeout(600)


def test_synthetic_runs_of_two_subjects_validate(tmp_path: Path, synth_run: SynthRun, bids_validator) -> None:
    for subject, runs in (("01", 2), ("02", 1)):
        for n in range(1, runs + 1):
            rec = Recorder(tmp_path / f"sub{subject}-run{n}", run_settings(subject=subject, run=n))
            record(rec, synth_run)
            rec.finish()
    report = validate(bids_validator, tmp_path / "bids")
    assert issues(report) == []
    assert report["summary"]["subjects"] == ["01", "02"] and report["summary"]["tasks"] == ["nf"]
    assert set(report["summary"]["dataTypes"]) == {"bold", "events"}


def test_a_broken_dataset_is_caught(tmp_path: Path, synth_run: SynthRun, bids_validator) -> None:
    """The check can fail: a sidecar whose TR contradicts the image is an error."""
    rec = Recorder(tmp_path / "run", run_settings())
    record(rec, synth_run, indices=range(4))
    bold = rec.finish()
    side = bold.with_name(bold.name.replace(".nii.gz", ".json"))
    fields = json.loads(side.read_text())
    fields["RepetitionTime"] = 2.5
    side.write_text(json.dumps(fields))
    assert issues(validate(bids_validator, tmp_path / "bids")) != []


def test_a_real_siemens_run_validates_and_matches_dcm2niix(tmp_path: Path, dicom_root: Path, reference_root: Path,
                                                           bids_validator) -> None:
    from rtcontrol.scanner import reader

    series = "siemens_mosaic_ep2d_int_6vol"
    rec = Recorder(tmp_path / "run", run_settings(task="rest", tr=3.2))
    files = sorted((dicom_root / series).glob("*.dcm")) or sorted((dicom_root / series).iterdir())
    for index, path in enumerate(files):
        if path.name.startswith("LICENSE"):
            continue
        volume = reader.read_file(path)
        volume.index = index
        volume.timeline.stamp("file_seen", time.monotonic())
        rec.record_volume(volume)
    bold = rec.finish()
    report = validate(bids_validator, tmp_path / "bids")
    assert issues(report) == []

    ours = nib.as_closest_canonical(nib.load(bold))
    ref_nifti = next((reference_root / series).glob("*.nii.gz"))
    ref = nib.as_closest_canonical(nib.load(ref_nifti))
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours.affine, ref.affine, atol=1e-3)
    np.testing.assert_allclose(ours.get_fdata(), ref.get_fdata(), atol=1e-3)
    side = json.loads(bold.with_name(bold.name.replace(".nii.gz", ".json")).read_text())
    ref_side = json.loads(ref_nifti.with_name(ref_nifti.name.replace(".nii.gz", ".json")).read_text())
    assert side["RepetitionTime"] == pytest.approx(ref_side["RepetitionTime"])
    assert side["SliceTiming"] == pytest.approx(ref_side["SliceTiming"], abs=1e-3)
    assert side["EchoTime"] == pytest.approx(ref_side["EchoTime"])
    assert side["Manufacturer"] == ref_side["Manufacturer"]
