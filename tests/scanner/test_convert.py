"""``main.py convert``: NIfTI + BIDS sidecar per series that agree with dcm2niix in world space."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rtcontrol.cli import main
from rtcontrol.paths import app_root
from rtcontrol.scanner.reader import read_file
from tests.support.fixtures import SERIES
from tests.support.scanner import _reference, assert_same_world


@pytest.mark.parametrize("series", SERIES)
def test_convert_each_fixture_series(series: str, dicom_root: Path, reference_root: Path, tmp_path: Path) -> None:
    assert main(["convert", str(dicom_root / series), "-o", str(tmp_path)]) == 0
    (nii,) = tmp_path.glob("*.nii.gz")
    side = json.loads(nii.with_name(nii.name.replace(".nii.gz", ".json")).read_text())
    ref, out = _reference(reference_root, series)
    assert nii.name.startswith(f"{out['sidecar']['SeriesNumber']}_")
    # the file we wrote, read back, sits where dcm2niix's does, with the same real values
    vols = read_file(nii)
    vols = vols if isinstance(vols, list) else [vols]
    assert_same_world(vols, ref)
    img = nib.load(nii)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    assert side["RepetitionTime"] == pytest.approx(out["sidecar"]["RepetitionTime"], abs=1e-6)
    assert side["EchoTime"] == pytest.approx(out["sidecar"]["EchoTime"], abs=1e-5)
    assert side["Manufacturer"] == out["sidecar"]["Manufacturer"]
    assert side["NumberOfVolumes"] == len(vols)
    assert ("SliceTiming" in side) == ("SliceTiming" in out["sidecar"])
    if "SliceTiming" in side:
        assert len(side["SliceTiming"]) == vols[0].shape[2]
        assert max(side["SliceTiming"]) < side["RepetitionTime"]
    for key in side:  # nothing identifying
        assert "Patient" not in key and key not in ("InstitutionName", "DeviceSerialNumber", "StationName")


def test_convert_folder_with_two_series_and_junk(dicom_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for series in ("siemens_mosaic_ax_35sl", "ge_epi_nih_10vol"):
        for p in (dicom_root / series).glob("*"):
            if p.name not in ("LICENSE.source", "README-Series.txt"):
                (src / f"{series[:5]}_{p.name}").symlink_to(p)
    (src / "scan.log").write_bytes(b"\x00\x00binary log\xff" * 30)
    out = tmp_path / "out"
    assert main(["convert", str(src), "-o", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "4_Axial_EPI-FMRI_Interleaved_I_to_S.json",
        "4_Axial_EPI-FMRI_Interleaved_I_to_S.nii.gz",
        "6_ax_asc_35sl.json",
        "6_ax_asc_35sl.nii.gz",
    ]
    assert nib.load(out / "4_Axial_EPI-FMRI_Interleaved_I_to_S.nii.gz").shape == (64, 64, 15, 10)


def test_missing_folder_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(tmp_path / "nope"), "-o", str(tmp_path / "out")]) != 0
    assert "no such folder" in capsys.readouterr().err


def test_empty_folder_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in").mkdir()
    assert main(["convert", str(tmp_path / "in"), "-o", str(tmp_path / "out")]) != 0
    assert "no files" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_only_foreign_files_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(600))
    (src / "notes.dat").write_text("hello " * 100)
    assert main(["convert", str(src), "-o", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert "no readable image series among 2 files" in err and "JPEG" in err


def test_truncated_file_is_reported_and_the_rest_converted(dicom_root: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    files = sorted((dicom_root / "siemens_mosaic_ep2d_int_6vol").glob("*.dcm"))
    for p in files[:-1]:
        (src / p.name).symlink_to(p)
    (src / files[-1].name).write_bytes(files[-1].read_bytes()[:5000])
    assert main(["convert", str(src), "-o", str(tmp_path / "out")]) == 1
    assert "IncompleteFile" in capsys.readouterr().err
    (nii,) = (tmp_path / "out").glob("*.nii.gz")
    assert nib.load(nii).shape == (64, 64, 36, 5)


def test_main_py_convert_as_a_user_runs_it(dicom_root: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(app_root() / "main.py"), "convert", str(dicom_root / "siemens_mosaic_ep2d_int_HF_6vol"),
         "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "5_ep2d_Int_HF.nii.gz" in proc.stdout
    side = json.loads((tmp_path / "5_ep2d_Int_HF.json").read_text())
    assert side["PhaseEncodingDirection"] == "j"  # our rows are not flipped: dcm2niix says j- for its own
    assert np.isclose(side["SliceTiming"][1], 0.0)


def test_series_names_are_safe_file_names() -> None:
    from rtcontrol.scanner.sidecar import series_name

    assert series_name({"SeriesNumber": 5, "SeriesDescription": "ep2d bold/AP (MB3)"}) == "5_ep2d_bold_AP_MB3"
    assert series_name({"SeriesDescription": "../../etc/passwd"}) == "etc_passwd"
    assert series_name({}, fallback="func") == "func"
    assert series_name({}, fallback="///") == "series"


def test_convert_a_folder_of_nifti_volumes(reference_root: Path, tmp_path: Path) -> None:
    """A scanner-side converter's 3-D files (vol_0001.nii ...) become one 4-D series again."""
    ref = nib.load(next((reference_root / "siemens_mosaic_ep2d_int_6vol").glob("*.nii.gz")))
    src = tmp_path / "in"
    src.mkdir()
    data = np.asarray(ref.dataobj.get_unscaled())
    for t in range(data.shape[3]):
        nib.save(nib.Nifti1Image(data[..., t], ref.affine), src / f"vol_{t + 1:04d}.nii")
    assert main(["convert", str(src), "-o", str(tmp_path / "out")]) == 0
    (nii,) = (tmp_path / "out").glob("*.nii.gz")
    assert nii.name == "vol.nii.gz"
    out = nib.load(nii)
    assert out.shape == data.shape and np.array_equal(np.asarray(out.dataobj), data)
    assert np.allclose(out.affine, ref.affine, atol=1e-5)
