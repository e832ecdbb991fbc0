"""Decode speed: one mosaic file to a Volume, and one GE volume from its slice files.

``decode_mosaic``: ``read_file`` on a 96x96x66 int16 Siemens mosaic (9x9 tiles, 864x864) built from
a real Prisma fixture's header (all its private CSA/ASCCONV bytes, so the parse is realistic),
read from the page cache: file read + header parse + pixel check + de-mosaic. The series layout
is cached after the first volume (``decode_mosaic_first`` is that first, uncached volume).
``decode_enhanced``: one Siemens XA enhanced file (33 frames) after the series' first.
``read_slices_volume``: the 15 slice files of one GE volume read and assembled.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pydicom

from benchmarks.stats import Figure, timing
from rtcontrol.paths import fixtures_dir
from rtcontrol.scanner import enhanced, mosaic
from rtcontrol.scanner.assemble import SliceAssembler
from rtcontrol.scanner.mosaic_writer import csa_header
from rtcontrol.scanner.reader import read_file

SHAPE = (96, 96, 66)
SOURCE = "siemens_mosaic_ep2d_int_6vol"
REPEATS = 300


def make_mosaics(folder: Path, n_files: int = 10, shape: tuple[int, int, int] = SHAPE) -> list[Path]:
    """Big int16 mosaics from a real fixture mosaic's header (raises FileNotFoundError without fixtures)."""
    root = fixtures_dir()
    if root is None:
        raise FileNotFoundError("scanner fixtures not found (set RTCONTROL_FIXTURES)")
    src = sorted((root / "dicom" / SOURCE).glob("*.dcm"))[0]
    ds = pydicom.dcmread(src)
    nx, ny, nz = shape
    grid = int(np.ceil(np.sqrt(nz)))
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER")
    tr_ms = float(ds.RepetitionTime)
    times = [f"{(k * tr_ms / nz):.8f}" for k in range(nz)]
    block[0x10].value = csa_header(
        [
            ("NumberOfImagesInMosaic", "US", [str(nz)]),
            ("SliceNormalVector", "FD", [f"{x:.8f}" for x in (0.0, 0.12360096, 0.99233200)]),
            ("MosaicRefAcqTimes", "FD", times),
        ]
    )
    ds.Rows, ds.Columns = grid * ny, grid * nx
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.AcquisitionMatrix = [nx, 0, 0, ny]
    rng = np.random.default_rng(0)
    paths = []
    for t in range(n_files):
        pix = rng.integers(0, 3000, size=(grid * ny, grid * nx), dtype=np.int16)
        ds.PixelData = pix.tobytes()
        ds.AcquisitionNumber = ds.InstanceNumber = t + 1
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        path = folder / f"MR.{t + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _mosaic_figures(folder: Path) -> list[Figure]:
    paths = make_mosaics(folder)
    mosaic.clear_cache()
    t0 = time.perf_counter()
    first = read_file(paths[0])
    first_s = time.perf_counter() - t0
    assert first.shape == SHAPE, first.shape  # type: ignore[union-attr]
    for p in paths:  # warm the page cache
        p.read_bytes()
    samples = []
    for i in range(REPEATS):
        p = paths[i % len(paths)]
        t0 = time.perf_counter()
        read_file(p)
        samples.append(time.perf_counter() - t0)
    note = f"{SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} int16, {paths[0].stat().st_size // 1024} KiB file, layout cached"
    first = Figure("decode_mosaic_first", {"ms": first_s * 1e3}, "uncached layout")
    return [timing("decode_mosaic", samples, note), first]


def _slices_figure() -> Figure | None:
    root = fixtures_dir()
    if root is None:
        return None
    files = sorted((root / "dicom" / "ge_epi_nih_10vol").glob("*.dcm"))
    per_volume = 15
    volumes = [files[i : i + per_volume] for i in range(0, len(files), per_volume)]
    for f in files:
        f.read_bytes()
    samples = []
    for _ in range(3):
        assembler = SliceAssembler()
        for group in volumes:
            t0 = time.perf_counter()
            out = []
            for f in group:
                out += assembler.add(read_file(f))  # type: ignore[arg-type]
            samples.append(time.perf_counter() - t0)
            assert len(out) == 1
    return timing("read_slices_volume", samples, "GE 64x64x15, 15 files read + assembled")


def _enhanced_figure() -> Figure | None:
    root = fixtures_dir()
    if root is None:
        return None
    files = sorted((root / "dicom" / "siemens_xa30_enhanced_bold_20vol").glob("*.dcm"))
    enhanced.clear_cache()
    read_file(files[0])  # the series' one full parse of its functional groups
    samples = []
    for i in range(100):
        f = files[1 + i % (len(files) - 1)]
        t0 = time.perf_counter()
        read_file(f)
        samples.append(time.perf_counter() - t0)
    return timing("decode_enhanced", samples, "Siemens XA 64x64x33, 33 frames, groups scanned")


def bench() -> Iterable[Figure]:
    with tempfile.TemporaryDirectory(prefix="rtcontrol-decode-") as tmp:
        try:
            yield from _mosaic_figures(Path(tmp))
        except FileNotFoundError as exc:
            yield Figure("decode_mosaic", {"n": 0}, str(exc))
    for fig in (_enhanced_figure(), _slices_figure()):
        if fig is not None:
            yield fig
