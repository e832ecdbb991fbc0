"""Offline assembly (convert, replay of a folder): every volume, whatever order the files are listed in;
gzipped DICOM; exit status 0 / 1 / 2 as the README says."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rtcontrol.cli import main
from rtcontrol.scanner.replay import plan_replay
from tests.support.generated import philips_asl
from tests.support.scanner import _dcm2niix, _reference, assert_same_world


def _dcm2niix_nii(src: Path, out: Path) -> nib.Nifti1Image:
    out.mkdir()
    proc = subprocess.run([_dcm2niix(), "-z", "n", "-o", str(out), str(src)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr or proc.stdout
    (nii,) = out.glob("*.nii")
    return nib.load(nii)


def _vols(nii: Path):
    from rtcontrol.scanner.reader import read_file

    got = read_file(nii)
    return got if isinstance(got, list) else [got]


def test_philips_label_control_asl_converts_to_every_volume(dicom_root: Path, tmp_path: Path, capsys) -> None:
    """Control and label images share each temporal position: 54 files are 6 volumes (was 3, with
    'arrived after that volume was handed on' for every other file)."""
    src = tmp_path / "asl"
    philips_asl(dicom_root / "philips_epi_magdeburg", src)
    ref = _dcm2niix_nii(src, tmp_path / "ref")
    assert ref.shape == (64, 64, 9, 6)
    assert main(["convert", str(src), "-o", str(tmp_path / "out")]) == 0
    assert "handed on" not in capsys.readouterr().err
    (nii,) = (tmp_path / "out").glob("*.nii.gz")
    vols = _vols(nii)
    assert len(vols) == 6
    assert_same_world(vols, ref)  # same volumes, same order (control, label, control ...), same values
    plan = plan_replay(src)
    assert [len(v.files) for v in plan.volumes] == [9] * 6 and not plan.skipped


@pytest.mark.parametrize("series", ["ge_hyperband_hb3_48sl", "philips_epi_magdeburg", "ge_epi_nih_10vol"])
def test_any_listing_order_gives_the_same_series(series: str, dicom_root: Path, reference_root: Path,
                                                 tmp_path: Path) -> None:
    """Files renamed at random (the listing order is the order of nothing) convert to the reference."""
    src = tmp_path / "in"
    src.mkdir()
    files = sorted((dicom_root / series).glob("*.dcm"))
    names = [f"x{i:05d}.dcm" for i in range(len(files))]
    random.Random(3).shuffle(names)
    for f, name in zip(files, names):
        (src / name).symlink_to(f)
    assert main(["convert", str(src), "-o", str(tmp_path / "out")]) == 0
    (nii,) = (tmp_path / "out").glob("*.nii.gz")
    ref, _ = _reference(reference_root, series)
    assert_same_world(_vols(nii), ref)


def test_gzipped_dicom_is_converted_and_replayed(dicom_root: Path, reference_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "gz"
    src.mkdir()
    for f in sorted((dicom_root / "siemens_xa60_enhanced_sms2").iterdir()):
        if f.name.isdigit():
            (src / f"{f.name}.dcm.gz").write_bytes(gzip.compress(f.read_bytes()))
    assert main(["convert", str(src), "-o", str(tmp_path / "out")]) == 0
    (nii,) = (tmp_path / "out").glob("*.nii.gz")
    ref, _ = _reference(reference_root, "siemens_xa60_enhanced_sms2")
    assert_same_world(_vols(nii), ref)
    watch = tmp_path / "watch"
    watch.mkdir()
    assert main(["replay", str(src), str(watch), "--tr", "0.01"]) == 0
    written = sorted(p.name for p in watch.iterdir())
    assert written == sorted(p.name[:-3] for p in src.iterdir())  # written as the scanner writes: plain .dcm
    assert all(p.read_bytes()[128:132] == b"DICM" for p in watch.iterdir())


def test_exit_status_identical_duplicate_is_a_warning(dicom_root: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    files = sorted((dicom_root / "ge_epi_nih_10vol").glob("*.dcm"))
    for f in files:
        (src / f.name).symlink_to(f)
    (src / "copy_of_first.dcm").write_bytes(files[0].read_bytes())
    assert main(["convert", str(src), "-o", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "copy_of_first.dcm" in err


def test_exit_status_missing_volume_is_1_and_named(dicom_root: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    files = sorted((dicom_root / "siemens_mosaic_ep2d_int_6vol").glob("*.dcm"))
    for f in files[:2] + files[3:]:
        (src / f.name).symlink_to(f)
    assert main(["convert", str(src), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "1 volume(s) missing (index 2)" in err
    side = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert side["NumberOfVolumes"] == 5


def test_exit_status_incomplete_per_slice_volume_is_1(dicom_root: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for f in sorted((dicom_root / "philips_epi_magdeburg").glob("*.dcm"))[1:]:  # one slice of volume 0 gone
        (src / f.name).symlink_to(f)
    assert main(["convert", str(src), "-o", str(tmp_path / "out")]) == 1
    assert "volume 0: 8 of 9 slices present" in capsys.readouterr().err
    (nii,) = (tmp_path / "out").glob("*.nii.gz")
    assert nib.load(nii).shape == (64, 64, 9, 2)


def _xa60(dicom_root: Path) -> list[Path]:
    return sorted(p for p in (dicom_root / "siemens_xa60_enhanced_sms2").iterdir() if p.name.isdigit())


def test_enhanced_file_with_several_volumes_is_split(dicom_root: Path, reference_root: Path, tmp_path: Path) -> None:
    """The three XA60 volumes packed into one 30-frame file: three volumes, as dcm2niix makes of it
    (run now) and as the fixture's reference holds them."""
    from tests.support.generated import pack_enhanced

    src = tmp_path / "in"
    src.mkdir()
    pack_enhanced(_xa60(dicom_root), src / "packed.dcm")
    ref = _dcm2niix_nii(src, tmp_path / "ref")
    assert ref.shape == (64, 64, 10, 3)
    assert main(["convert", str(src), "-o", str(tmp_path / "out")]) == 0
    (nii,) = (tmp_path / "out").glob("*.nii.gz")
    vols = _vols(nii)
    assert_same_world(vols, ref)
    assert_same_world(vols, _reference(reference_root, "siemens_xa60_enhanced_sms2")[0])
    plan = plan_replay(src)
    assert len(plan.volumes) == 1 and plan.volumes[0].files == [src / "packed.dcm"]  # the file is written once


def test_enhanced_file_with_two_echoes_becomes_two_series(dicom_root: Path, reference_root: Path,
                                                          tmp_path: Path) -> None:
    """Two echoes in one file: series '<name>_e1' and '<name>_e2', each the stack its frames came from.
    (dcm2niix itself writes this generated file as one 20-slice image, so the oracle is the reference
    NIfTI of the real volumes the echoes were made from.)"""
    from tests.support.generated import pack_enhanced

    src = tmp_path / "in"
    src.mkdir()
    pack_enhanced(_xa60(dicom_root)[:2], src / "echoes.dcm", echoes=True)
    assert main(["convert", str(src), "-o", str(tmp_path / "out")]) == 0
    names = sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz"))
    echoes = [n.replace("_e1.", "_eN.").replace("_e2.", "_eN.") for n in names]
    assert echoes == ["4_PRODUCT__ep2d_bold__p3_sms2_eN.nii.gz"] * 2
    assert names[0].endswith("_e1.nii.gz") and names[1].endswith("_e2.nii.gz")
    ref_img = _reference(reference_root, "siemens_xa60_enhanced_sms2")[0]
    ref = np.asarray(ref_img.dataobj)
    for e, name in enumerate(names):
        img = nib.load(tmp_path / "out" / name)
        side = json.loads((tmp_path / "out" / name.replace(".nii.gz", ".json")).read_text())
        assert img.shape == (64, 64, 10) and side["EchoTime"] == pytest.approx(0.02 * (e + 1))
        (vol,) = _vols(tmp_path / "out" / name)
        vol.index = 0  # read back alone (its name's trailing digit would make it volume 1)
        assert_same_world([vol], nib.Nifti1Image(ref[..., e : e + 1], ref_img.affine))


def test_exit_status_identical_duplicate_volume_file_is_a_warning(dicom_root: Path, tmp_path: Path, capsys) -> None:
    """A mosaic volume file present twice under two names: exit 0, a warning; a different file claiming the
    same volume is a problem (exit 1)."""
    src = tmp_path / "in"
    src.mkdir()
    files = sorted((dicom_root / "siemens_mosaic_ep2d_int_6vol").glob("*.dcm"))
    for f in files:
        (src / f.name).symlink_to(f)
    (src / "copy.dcm").write_bytes(files[0].read_bytes())
    assert main(["convert", str(src), "-o", str(tmp_path / "out")]) == 0
    assert "volume 0 given twice (identical)" in capsys.readouterr().err
    import pydicom

    other = pydicom.dcmread(files[1])
    other.AcquisitionNumber = 1  # volume 1's pixels claiming to be volume 0
    other.save_as(src / "copy.dcm")
    assert main(["convert", str(src), "-o", str(tmp_path / "out2")]) == 1
    assert "two different volumes with index 0" in capsys.readouterr().err
