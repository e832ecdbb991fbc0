"""read_file on real fixture files, half-written copies and foreign files."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset

from rtcontrol.scanner import enhanced, mosaic
from rtcontrol.scanner.errors import CorruptFile, ForeignFile, IncompleteFile
from rtcontrol.scanner.reader import SliceImage, read_file
from rtcontrol.scanner.volume import Volume

ONE_FILE = {
    "siemens_mosaic_ep2d_int_HF_6vol": "IM-0004-0003.dcm",
    "siemens_xa30_enhanced_bold_20vol": None,  # first .dcm
    "ge_epi_nih_10vol": "axial_epi_fmri_interleaved_i_to_s-00017.dcm",
    "philips_epi_magdeburg": "201_EPI_asc_CLEAR_0002_05.dcm",
    "siemens_mosaic_ax_35sl": None,
}


def _file(dicom_root: Path, series: str) -> Path:
    name = ONE_FILE.get(series)
    if name:
        return dicom_root / series / name
    return sorted(p for p in (dicom_root / series).iterdir() if p.name != "LICENSE.source")[0]


def test_mosaic_file_is_a_volume(dicom_root: Path) -> None:
    v = read_file(_file(dicom_root, "siemens_mosaic_ep2d_int_HF_6vol"))
    assert isinstance(v, Volume)
    assert v.shape == (64, 64, 36) and v.data.dtype == np.uint16
    assert v.index == 2  # AcquisitionNumber 3, 0-based
    assert v.tr == pytest.approx(3.2)
    assert len(v.slice_timing) == 36 and max(v.slice_timing) < v.tr
    assert v.header["SourceFormat"] == "siemens_mosaic"
    assert v.series_uid and v.acquisition_time is not None
    assert "PatientName" not in v.header


def test_odd_slice_count_mosaic_drops_empty_tiles(dicom_root: Path) -> None:
    v = read_file(_file(dicom_root, "siemens_mosaic_ax_35sl"))
    assert isinstance(v, Volume) and v.shape == (64, 64, 35)
    assert v.data[..., -1].any()  # the last real slice has signal; the empty tile was not taken


def test_head_to_foot_mosaic_runs_foot_to_head(dicom_root: Path) -> None:
    """HF storage is reversed: k increases towards the head in both the HF and the normal series."""
    hf = read_file(_file(dicom_root, "siemens_mosaic_ep2d_int_HF_6vol"))
    ff = read_file(dicom_root / "siemens_mosaic_ep2d_int_6vol" / "IM-0003-0001.dcm")
    assert hf.affine[2, 2] > 0 and ff.affine[2, 2] > 0  # RAS z grows with k


def test_layout_cache_gives_identical_volumes(dicom_root: Path) -> None:
    path = _file(dicom_root, "siemens_mosaic_ep2d_int_HF_6vol")
    mosaic.clear_cache()
    cold = read_file(path)
    warm = read_file(path)
    assert np.array_equal(cold.data, warm.data) and np.array_equal(cold.affine, warm.affine)
    assert cold.slice_timing == warm.slice_timing


def test_enhanced_file_is_a_volume(dicom_root: Path) -> None:
    v = read_file(_file(dicom_root, "siemens_xa30_enhanced_bold_20vol"))
    assert isinstance(v, Volume) and v.shape == (64, 64, 33)
    assert v.header["SourceFormat"] == "siemens_enhanced" and v.index == 0
    assert v.header["MultibandAccelerationFactor"] == 3


def test_enhanced_byte_scan_matches_full_parse(dicom_root: Path) -> None:
    """Volumes 2..N take the fast byte scan of the functional groups: same result as pydicom's parse."""
    files = sorted((dicom_root / "siemens_xa30_enhanced_bold_20vol").glob("*.dcm"))[:5]
    enhanced.clear_cache()
    scanned = [read_file(f) for f in files]
    for f, fast in zip(files, scanned):
        enhanced.clear_cache()
        full = read_file(f)
        assert fast.index == full.index
        assert np.array_equal(fast.data, full.data) and np.allclose(fast.affine, full.affine, atol=1e-9)
        assert fast.slice_timing == full.slice_timing and fast.acquisition_time == full.acquisition_time
        assert (fast.scl_slope, fast.scl_inter) == (full.scl_slope, full.scl_inter)
    assert [v.index for v in scanned] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("series", ["ge_epi_nih_10vol", "philips_epi_magdeburg"])
def test_single_slice_file_is_a_slice(series: str, dicom_root: Path) -> None:
    s = read_file(_file(dicom_root, series))
    assert isinstance(s, SliceImage)
    assert s.pixels.shape == (64, 64)
    assert s.temporal_index == 1  # second volume in both files chosen
    assert s.slices_per_volume == {"ge_epi_nih_10vol": 15, "philips_epi_magdeburg": 9}[series]


def test_philips_scaling_is_floating_point(dicom_root: Path) -> None:
    s = read_file(_file(dicom_root, "philips_epi_magdeburg"))
    assert s.scl_slope == pytest.approx(1 / 0.004284040071070194)
    assert s.scl_inter == 0.0


def test_nifti_3d_and_4d(tmp_path: Path, reference_root: Path) -> None:
    ref = nib.load(next((reference_root / "philips_epi_magdeburg").glob("*.nii.gz")))
    four = tmp_path / "run.nii.gz"
    shutil.copy(next((reference_root / "philips_epi_magdeburg").glob("*.nii.gz")), four)
    vols = read_file(four)
    assert isinstance(vols, list) and [v.index for v in vols] == [0, 1, 2]
    assert np.allclose(vols[1].scaled(np.float64), np.asarray(ref.dataobj)[..., 1], rtol=1e-6)
    assert vols[0].tr == pytest.approx(2.0, abs=1e-5)
    three = tmp_path / "vol_0004.nii"
    nib.save(nib.Nifti1Image(np.asarray(ref.dataobj.get_unscaled())[..., 2], ref.affine), three)
    v = read_file(three)
    assert isinstance(v, Volume) and v.index == 3 and np.allclose(v.affine, ref.affine)


# ---------------------------------------------------------------- half-written files


@pytest.mark.parametrize("series", list(ONE_FILE))
@pytest.mark.parametrize("fraction", [0.0005, 0.05, 0.3, 0.6, 0.95, 0.9999])
def test_truncated_copy_is_incomplete(series: str, fraction: float, dicom_root: Path, tmp_path: Path) -> None:
    src = _file(dicom_root, series)
    raw = src.read_bytes()
    n = max(1, int(len(raw) * fraction))
    part = tmp_path / src.name
    part.write_bytes(raw[:n])
    with pytest.raises(IncompleteFile) as info:
        read_file(part)
    assert str(part) in str(info.value)


def test_truncated_by_one_byte_and_header_only(dicom_root: Path, tmp_path: Path) -> None:
    src = _file(dicom_root, "siemens_mosaic_ep2d_int_6vol")
    raw = src.read_bytes()
    for n in (131, 132, 500, len(raw) - 64 * 64 * 36 * 2 - 12, len(raw) - 1):
        part = tmp_path / f"cut_{n}.dcm"
        part.write_bytes(raw[:n])
        with pytest.raises(IncompleteFile):
            read_file(part)
    part = tmp_path / "whole.dcm"
    part.write_bytes(raw)
    assert isinstance(read_file(part), Volume)  # once complete, the same file reads


def test_truncated_nifti_gz_is_incomplete(reference_root: Path, tmp_path: Path) -> None:
    raw = next((reference_root / "siemens_mosaic_ax_35sl").glob("*.nii.gz")).read_bytes()
    for n in (10, 200, len(raw) // 2, len(raw) - 5):
        part = tmp_path / f"cut{n}.nii.gz"
        part.write_bytes(raw[:n])
        with pytest.raises(IncompleteFile):
            read_file(part)
    plain = gzip.decompress(raw)
    part = tmp_path / "cut.nii"
    part.write_bytes(plain[: len(plain) - 100])
    with pytest.raises(IncompleteFile):
        read_file(part)


# ---------------------------------------------------------------- foreign and corrupt files


def test_foreign_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("scan notes: subject moved during run 2\n" * 20)
    jpeg = tmp_path / "snapshot.jpg"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 40)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    for path, word in ((text, "text"), (jpeg, "JPEG"), (empty, "empty")):
        with pytest.raises(ForeignFile) as info:
            read_file(path)
        assert word in str(info.value)


def _save(ds: Dataset, meta_class: str, path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = meta_class
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicomdir_like_and_report_are_foreign(tmp_path: Path) -> None:
    dirlike = Dataset()
    dirlike.FileSetID = "SCANNER"
    path = _save(dirlike, "1.2.840.10008.1.3.10", tmp_path / "DICOMDIR")
    with pytest.raises(ForeignFile, match="not an image"):
        read_file(path)
    report = Dataset()
    report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    report.Modality = "SR"
    with pytest.raises(ForeignFile):
        read_file(_save(report, report.SOPClassUID, tmp_path / "report.dcm"))


def test_complete_file_with_broken_header_is_corrupt(dicom_root: Path, tmp_path: Path) -> None:
    raw = bytearray(_file(dicom_root, "philips_epi_magdeburg").read_bytes())
    # wreck the dataset just after the file meta: an element claiming a length past the end
    start = 132 + 12 + int.from_bytes(raw[140:144], "little")
    raw[start + 6 : start + 8] = b"\xff\x7f"
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(bytes(raw))
    with pytest.raises((CorruptFile, IncompleteFile)):
        read_file(bad)


def test_pixel_data_shorter_than_image_is_corrupt(dicom_root: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(_file(dicom_root, "ge_epi_nih_10vol"))
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    path = tmp_path / "short.dcm"
    ds.save_as(path)
    with pytest.raises(CorruptFile, match="needs"):
        read_file(path)


def test_compressed_slice_decodes_through_pydicom(dicom_root: Path, tmp_path: Path) -> None:
    """Encapsulated (RLE lossless) pixel data takes pydicom's decoder: same pixels as uncompressed."""
    from pydicom.uid import RLELossless

    src = _file(dicom_root, "ge_epi_nih_10vol")
    plain = read_file(src)
    ds = pydicom.dcmread(src)
    ds.compress(RLELossless)
    path = tmp_path / "rle.dcm"
    ds.save_as(path)
    packed = read_file(path)
    assert isinstance(packed, SliceImage) and np.array_equal(packed.pixels, plain.pixels)
    raw = path.read_bytes()
    (tmp_path / "rle_part.dcm").write_bytes(raw[: len(raw) - 300])
    with pytest.raises(IncompleteFile, match="not finished"):
        read_file(tmp_path / "rle_part.dcm")


@pytest.mark.parametrize("series", ["siemens_mosaic_ax_35sl", "siemens_xa30_enhanced_bold_20vol", "ge_epi_nih_10vol"])
def test_unsupported_bits_allocated_names_the_file(series: str, dicom_root: Path, tmp_path: Path) -> None:
    """The error says which file (it used to say '?'), for every reader that decodes pixels."""
    ds = pydicom.dcmread(_file(dicom_root, series))
    ds.BitsAllocated = 12  # the pixel bytes stay: complete, but not a layout we read
    path = tmp_path / "twelve_bit.dcm"
    ds.save_as(path)
    with pytest.raises(CorruptFile, match="BitsAllocated=12") as info:
        read_file(path)
    assert info.value.path == path
    assert str(info.value).startswith(str(path))


def test_enhanced_slice_timing_falls_back_to_frame_acquisition_times(dicom_root: Path, tmp_path: Path) -> None:
    """Without Siemens' per-frame slice time (0021,1104) the FrameAcquisitionDateTime stamps give the timing."""
    src = sorted((dicom_root / "siemens_xa30_enhanced_bold_20vol").glob("*.dcm"))[0]
    ds = pydicom.dcmread(src)
    stamps = []
    for frame in ds.PerFrameFunctionalGroupsSequence:
        del frame.private_block(0x0021, enhanced.SIEMENS_SDI)[0xFE].value[0][0x0021, 0x1104]
        dt = str(frame.FrameContentSequence[0].FrameAcquisitionDateTime)
        stamps.append(int(dt[8:10]) * 3600 + int(dt[10:12]) * 60 + float(dt[12:]))
    path = tmp_path / "no_slice_time.dcm"
    ds.save_as(path)
    enhanced.clear_cache()
    with_private, without = read_file(src), read_file(path)
    assert without.slice_timing != with_private.slice_timing  # the two sources differ on this scanner...
    np.testing.assert_allclose(without.slice_timing, with_private.slice_timing, atol=2.5e-3 + 1e-9)  # ...by <= 2.5 ms
    expected = np.sort(np.asarray(stamps) - min(stamps))  # order checked against the slice times above
    np.testing.assert_allclose(np.sort(without.slice_timing), expected, atol=1e-6)


def test_gzipped_dicom_in_the_live_path_says_where_it_is_read(tmp_path: Path, dicom_root: Path) -> None:
    """The live watcher reads DICOM uncompressed: a .dcm.gz is skipped with a message naming convert/replay."""
    import gzip

    src = sorted((dicom_root / "siemens_mosaic_ep2d_int_6vol").glob("*.dcm"))[0]
    gz = tmp_path / "a.dcm.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    with pytest.raises(ForeignFile, match="gzipped DICOM is read by convert and replay"):
        read_file(gz)
    assert read_file(gz, gzipped=True).shape == (64, 64, 36)
