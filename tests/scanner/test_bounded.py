"""Hostile input costs an error message, not the machine: a gzip bomb named .nii.gz and a huge file named
.dcm are refused after reading what their headers account for; the watcher keeps handing on the real
volumes around them. Memory is measured with tracemalloc (all threads); no timing is asserted."""

from __future__ import annotations

import asyncio
import gzip
import os
import tracemalloc
import zlib
from pathlib import Path

import pytest

from rtcontrol.scanner.errors import CorruptFile
from rtcontrol.scanner.reader import read_file
from tests.support.scanner import Sink, make_watcher, series_files, write

BOMB_ZEROS = 512 << 20  # what the bomb inflates to beyond its image (the field case was 3 GiB)
MiB = 1 << 20


def make_bomb(reference_root: Path, dst: Path) -> Path:
    """A real 64x64x35 NIfTI (header and data from the fixture reference, volume 0) followed by 512 MiB of
    zeros, gzipped: about 0.5 MB on disk."""
    import nibabel as nib

    ref = nib.load(next((reference_root / "siemens_mosaic_ax_35sl").glob("*.nii.gz")))
    vol = nib.Nifti1Image(ref.dataobj[..., 0], ref.affine)
    head = vol.to_bytes()
    comp = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(16 * MiB)
    with open(dst, "wb") as f:
        f.write(comp.compress(head))
        for _ in range(BOMB_ZEROS // len(chunk)):
            f.write(comp.compress(chunk))
        f.write(comp.flush())
    return dst


@pytest.fixture(scope="module")
def bomb(reference_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bomb(reference_root, tmp_path_factory.mktemp("bomb") / "zeros.nii.gz")


def _peak(fn) -> tuple[object, int]:
    tracemalloc.start()
    try:
        try:
            out: object = fn()
        except Exception as exc:  # the error is the result under test
            out = exc
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_gzip_bomb_is_refused_without_inflating_it(bomb: Path) -> None:
    assert bomb.stat().st_size < 2 * MiB
    err, peak = _peak(lambda: read_file(bomb))
    assert isinstance(err, CorruptFile) and "expands beyond" in err.reason, err
    assert peak < 32 * MiB, f"peak {peak / MiB:.0f} MiB"


def test_gzipped_dicom_bomb_is_bounded(dicom_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .dcm.gz in convert/replay has no size up front: its decompression stops at MAX_GUNZIP."""
    from rtcontrol.scanner import nifti_io

    monkeypatch.setattr(nifti_io, "MAX_GUNZIP", 16 * MiB)
    src = series_files(dicom_root, "siemens_mosaic_ep2d_int_6vol")[0]
    dst = tmp_path / "x.dcm.gz"
    comp = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    dst.write_bytes(comp.compress(src.read_bytes()) + comp.compress(bytes(64 * MiB)) + comp.flush())
    err, peak = _peak(lambda: read_file(dst, gzipped=True))
    assert isinstance(err, CorruptFile) and "expands beyond" in err.reason, err
    assert peak < 48 * MiB
    dst.write_bytes(gzip.compress(src.read_bytes()))
    assert read_file(dst, gzipped=True).index == 0  # a real one within the bound reads


def test_huge_file_named_dcm_is_skipped_unread(dicom_root: Path, tmp_path: Path) -> None:
    """A 2 GiB file with a real DICOM header (sparse: no disk used) is refused from its first 4 MiB."""
    src = series_files(dicom_root, "siemens_mosaic_ep2d_int_6vol")[0]
    big = tmp_path / "big.dcm"
    big.write_bytes(src.read_bytes())
    os.truncate(big, 2 << 30)
    err, peak = _peak(lambda: read_file(big))
    assert isinstance(err, CorruptFile) and "skipped unread" in err.reason, err
    assert peak < 32 * MiB


async def test_watcher_goes_on_past_a_bomb(bomb: Path, dicom_root: Path, tmp_path: Path) -> None:
    """Real volumes, the bomb, more real volumes: every real volume is handed on, the bomb is reported
    by name, and the process never holds more than a few tens of MiB for it."""
    mosaic = series_files(dicom_root, "siemens_mosaic_ep2d_int_6vol")
    sink = Sink()
    tracemalloc.start()
    try:
        async with make_watcher(tmp_path, sink, "event"):
            for n, src in enumerate(mosaic):
                await write(tmp_path / src.name, src.read_bytes())
                if n == 2:
                    await write(tmp_path / "zeros.nii.gz", bomb.read_bytes())
            await sink.until(lambda: len(sink.volumes) == 6 and sink.kinds("file_error"), timeout=20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [v.index for v in sink.volumes] == list(range(6))
    (error,) = sink.kinds("file_error")
    assert error.path is not None and error.path.name == "zeros.nii.gz" and "expands beyond" in error.message
    assert peak < 96 * MiB, f"peak {peak / MiB:.0f} MiB"
    await asyncio.sleep(0)
