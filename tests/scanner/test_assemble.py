"""SliceAssembler on the real GE and Philips slice series, in scanner and hostile orders."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from rtcontrol.scanner.assemble import SliceAssembler
from rtcontrol.scanner.reader import SliceImage, read_file
from rtcontrol.scanner.series import read_series


def _slices(dicom_root: Path, series: str) -> list[SliceImage]:
    out = [read_file(p) for p in sorted((dicom_root / series).glob("*.dcm"))]
    assert all(isinstance(s, SliceImage) for s in out)
    return out  # type: ignore[return-value]


@pytest.fixture(scope="module")
def ge(dicom_root: Path) -> list[SliceImage]:
    return _slices(dicom_root, "ge_epi_nih_10vol")


@pytest.fixture(scope="module")
def philips(dicom_root: Path) -> list[SliceImage]:
    return _slices(dicom_root, "philips_epi_magdeburg")


def _feed(slices: list[SliceImage]) -> tuple[list, SliceAssembler]:
    asm = SliceAssembler()
    out = []
    for s in slices:
        out += asm.add(s)
    return out, asm


def test_ge_in_scanner_order_emits_each_volume_when_complete(ge: list[SliceImage]) -> None:
    asm = SliceAssembler()
    emitted_at = []
    for n, s in enumerate(ge, start=1):
        for v in asm.add(s):
            emitted_at.append((v.index, n))
    assert emitted_at == [(t, 15 * (t + 1)) for t in range(10)]  # a volume leaves with its last slice
    assert asm.flush() == [] and asm.problems == []


def test_shuffled_arrival_gives_the_same_volumes_in_order(ge: list[SliceImage]) -> None:
    """Files arriving out of order (a network share) within about two volumes."""
    ordered, _ = _feed(ge)
    rng = random.Random(7)
    shuffled = []
    for start in range(0, len(ge), 25):
        chunk = ge[start : start + 25]
        rng.shuffle(chunk)
        shuffled += chunk
    out, asm = _feed(shuffled)
    out += asm.flush()
    assert [v.index for v in out] == list(range(10)) and asm.problems == []
    for a, b in zip(ordered, out):
        assert np.array_equal(a.data, b.data) and np.allclose(a.affine, b.affine)


def test_offline_assembly_waits_for_every_volume(ge: list[SliceImage]) -> None:
    """With no deadline (offline conversion) even a fully shuffled run comes out whole and in order."""
    shuffled = ge[:]
    random.Random(3).shuffle(shuffled)
    asm = SliceAssembler(max_wait=None)
    out = []
    for s in shuffled:
        out += asm.add(s)
    out += asm.flush()
    assert [v.index for v in out] == list(range(10)) and asm.problems == []


def test_philips_instance_numbers_are_not_spatial_order(philips: list[SliceImage]) -> None:
    """Philips numbers instances across volumes (1, 4, 7 ... for volume 1): position decides k."""
    out, _ = _feed(philips)
    assert [v.index for v in out] == [0, 1, 2]
    v = out[0]
    positions = [v.world_coords([[0, 0, k]])[0] for k in range(v.shape[2])]
    steps = np.diff(np.asarray(positions), axis=0)
    assert np.allclose(steps, steps[0], atol=1e-3)  # evenly spaced, monotonic along the normal
    assert np.linalg.norm(steps[0]) == pytest.approx(8.0, abs=1e-3)  # SpacingBetweenSlices


def test_duplicate_delivery_is_ignored(ge: list[SliceImage]) -> None:
    doubled = []
    for s in ge[:30]:
        doubled += [s, s]
    out, asm = _feed(doubled)
    assert [v.index for v in out] == [0, 1]
    assert asm.problems == []


def test_missing_slice_gives_up_that_volume_and_goes_on(ge: list[SliceImage]) -> None:
    lost = ge[20]  # volume 1 loses a slice
    out, asm = _feed([s for s in ge if s is not lost])
    assert [v.index for v in out] == [0] + list(range(2, 10))
    assert any("volume 1 given up" in p for p in asm.problems)


def test_flush_reports_incomplete_last_volume(ge: list[SliceImage]) -> None:
    out, asm = _feed(ge[:40])  # 2 volumes and 10 slices of the third
    assert [v.index for v in out] == [0, 1]
    assert asm.flush() == []
    assert any("volume 2 incomplete" in p and "10 of 15" in p for p in asm.problems)


def test_late_slice_of_an_emitted_volume_is_reported(ge: list[SliceImage]) -> None:
    asm = SliceAssembler()
    for s in ge[:15]:
        asm.add(s)
    assert asm.add(ge[3]) == []  # same file again: a duplicate, silently fine
    copy = SliceImage(**{**ge[3].__dict__, "path": Path("/elsewhere/copy.dcm")})
    assert asm.add(copy) == []
    assert any("after that volume was handed on" in p for p in asm.problems)


def test_without_temporal_tags_volumes_come_from_repeated_positions(ge: list[SliceImage]) -> None:
    """A vendor that writes no temporal index: the n-th slice at a position belongs to volume n."""
    bare = [SliceImage(**{**s.__dict__, "temporal_index": None, "slices_per_volume": None}) for s in ge]
    out, asm = _feed(bare)
    out += asm.flush()
    ref, _ = _feed(ge)
    assert [v.index for v in out] == list(range(10))
    assert all(np.array_equal(a.data, b.data) for a, b in zip(ref, out))


def test_other_series_is_refused(ge: list[SliceImage], philips: list[SliceImage]) -> None:
    asm = SliceAssembler()
    asm.add(ge[0])
    with pytest.raises(ValueError, match="series"):
        asm.add(philips[0])


def test_read_series_on_a_mixed_folder(dicom_root: Path, tmp_path: Path) -> None:
    """Two series in one folder (links to the real files) plus a stray text file."""
    for series in ("philips_epi_magdeburg", "siemens_mosaic_ax_35sl"):
        for p in (dicom_root / series).iterdir():
            if p.name != "LICENSE.source":
                (tmp_path / f"{series}_{p.name}").symlink_to(p)
    (tmp_path / "stray.bin").write_bytes(b"\x00\x01not an image" * 10)
    found = read_series(tmp_path)
    assert sorted(len(v) for v in found.values()) == [2, 3]


def test_siemens_single_slices_cut_from_a_mosaic_assemble_back(dicom_root: Path, tmp_path: Path) -> None:
    """Siemens non-mosaic export: one file per slice, AcquisitionNumber per volume, instance numbers
    in a scrambled order. Cut from a real mosaic, the slices must assemble into the same volumes."""
    import pydicom

    from rtcontrol.scanner.geometry import LPS_TO_RAS

    src_files = sorted((dicom_root / "siemens_mosaic_ep2d_int_6vol").glob("*.dcm"))[:2]
    originals = [read_file(p) for p in src_files]
    rng = random.Random(1)
    for f, vol in zip(src_files, originals):
        ds = pydicom.dcmread(f)
        lps = LPS_TO_RAS @ vol.affine  # the same matrix flips RAS back to LPS
        numbers = list(range(1, vol.shape[2] + 1))
        rng.shuffle(numbers)
        for k in range(vol.shape[2]):
            s = ds.copy()
            s.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
            s.Rows, s.Columns = vol.shape[1], vol.shape[0]
            s.PixelData = np.ascontiguousarray(vol.data[:, :, k].T).tobytes()
            s.ImagePositionPatient = [f"{x:.6f}" for x in (lps @ [0, 0, k, 1])[:3]]
            s.InstanceNumber = numbers[k] + 100 * int(ds.AcquisitionNumber)
            s.ImagesInAcquisition = vol.shape[2]
            s.SOPInstanceUID = s.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
            s.save_as(tmp_path / f"slice_{ds.AcquisitionNumber}_{numbers[k]:03d}.dcm")
    (vols,) = read_series(tmp_path).values()
    assert [v.index for v in vols] == [o.index for o in originals]
    for v, o in zip(vols, originals):
        assert v.header["SourceFormat"] == "slices"
        assert np.array_equal(v.data, o.data)
        assert np.allclose(v.affine, o.affine, atol=1e-4)
