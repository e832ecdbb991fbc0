"""Ingest latency: a mosaic file closed on disk -> ``on_volume`` called with the Volume.

A writer thread writes 96x96x66 int16 Siemens mosaic files (made by the simulator's writer) into a
temporary folder one at a time, stamping ``time.monotonic()`` right after ``close()``; the watcher
stamps the same clock when it hands the Volume on. Event mode (inotify close-write) and polling mode;
``ingest_moved``: each file written in a sibling folder and renamed in (stamped before the rename), as
export tools and DICOM receivers deliver (a creation with no close event).

``ingest_slices``: a one-file-per-slice series (36 slices of 64x64 int16 per volume, classic MR Image
Storage as Siemens/GE/Philips write it), the time from the close of a volume's last slice to the Volume.

Figures: ``BENCH ingest_event``, ``BENCH ingest_poll``, ``BENCH ingest_moved``, ``BENCH ingest_slices``
(median/p90/p99/max in ms).
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from benchmarks.stats import Figure, timing

SHAPE = (96, 96, 66)
VOLUMES = 150
WARMUP = 5
INTERVAL = (0.02, 0.04)  # seconds between files, random: the scanner's clock is not in step with our polling


def _mosaic_files(n: int) -> list[tuple[str, bytes]]:
    from rtcontrol.scanner.mosaic_writer import MosaicWriter
    from rtcontrol.scanner.synth import SynthSpec, generate, mosaic_series

    distinct = 4  # a few distinct images, numbered as a long run
    run = generate(SynthSpec(volumes=distinct, shape=SHAPE, voxel_mm=(2.0, 2.0, 2.0), dtype="int16", seed=1))
    writer = MosaicWriter(mosaic_series(run))
    return [(writer.filename(i), writer.encode(run.volume(i % distinct), i)) for i in range(n)]


SLICES = 36
SLICE_VOLUMES = 60


def _slice_files(volumes: int) -> list[list[tuple[str, bytes]]]:
    """Per volume, its slice files (name, bytes) in acquisition order (interleaved), as a scanner exports them."""
    from io import BytesIO

    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    series = generate_uid()
    order = list(range(0, SLICES, 2)) + list(range(1, SLICES, 2))
    out = []
    for v in range(volumes):
        files = []
        for k in order:
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
            ds.Modality, ds.Manufacturer = "MR", "SIEMENS"
            ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series, 9, "bench_slices"
            ds.InstanceNumber, ds.AcquisitionNumber = v * SLICES + k + 1, v + 1
            ds.ImagesInAcquisition = SLICES
            ds.RepetitionTime, ds.EchoTime = 2000, 30
            ds.ImagePositionPatient = [-96.0, -96.0, -70.0 + 3.0 * k]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.PixelSpacing, ds.SliceThickness = [3.0, 3.0], 3.0
            ds.Rows = ds.Columns = 64
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.PixelData = rng.integers(0, 2000, (64, 64), dtype=np.int16).tobytes()
            buf = BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            files.append((f"IM_{v:04d}_{k:03d}.dcm", buf.getvalue()))
        out.append(files)
    return out


async def _measure_slices(volumes: list[list[tuple[str, bytes]]]) -> list[float]:
    """Per volume: its slices written spread over a short TR; from the last slice's close to the Volume."""
    from rtcontrol.scanner.watcher import ScanWatcher

    last_closed: dict[int, float] = {}
    delivered: dict[int, float] = {}
    got = asyncio.Event()

    def on_volume(volume) -> None:
        delivered[volume.index] = time.monotonic()
        got.set()

    with tempfile.TemporaryDirectory(prefix="rtcontrol-bench-") as tmp:
        folder = Path(tmp)
        watcher = ScanWatcher(folder, on_volume)
        await watcher.start()
        loop = asyncio.get_running_loop()
        try:
            for v, files in enumerate(volumes):
                got.clear()

                def write(v: int = v, files: list[tuple[str, bytes]] = files) -> None:
                    for name, data in files:
                        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                        try:
                            os.write(fd, data)
                        finally:
                            last_closed[v] = time.monotonic()
                            os.close(fd)
                        time.sleep(0.002)  # slices come over the TR

                await loop.run_in_executor(None, write)
                try:
                    await asyncio.wait_for(got.wait(), 2.0)
                except TimeoutError:
                    pass
                await asyncio.sleep(0.02)
        finally:
            await watcher.stop()
    return [delivered[v] - last_closed[v] for v in range(WARMUP, len(volumes)) if v in delivered]


async def _measure(polling: bool, files: list[tuple[str, bytes]], moved: bool = False) -> list[float]:
    from rtcontrol.scanner.watcher import ScanWatcher

    closed: dict[int, float] = {}
    delivered: dict[int, float] = {}
    got = asyncio.Event()
    rng = random.Random(0)

    def on_volume(volume) -> None:
        delivered[volume.index] = time.monotonic()
        got.set()

    with tempfile.TemporaryDirectory(prefix="rtcontrol-bench-") as tmp:
        folder = Path(tmp) / "watch"
        outside = Path(tmp) / "export"
        folder.mkdir()
        outside.mkdir()
        watcher = ScanWatcher(folder, on_volume, polling=polling, poll_interval=0.01)
        await watcher.start()
        loop = asyncio.get_running_loop()
        try:
            for i, (name, data) in enumerate(files):
                got.clear()

                def write(i: int = i, name: str = name, data: bytes = data) -> None:
                    if moved:  # written in a sibling folder, then renamed in (stamped before the rename)
                        tmp_path = outside / name
                        tmp_path.write_bytes(data)
                        closed[i] = time.monotonic()
                        os.rename(tmp_path, folder / name)
                        return
                    fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    try:
                        os.write(fd, data)
                    finally:
                        # stamp before close(): after it, this thread may wait for the GIL while the
                        # watcher already works, which would understate the latency
                        closed[i] = time.monotonic()
                        os.close(fd)

                await loop.run_in_executor(None, write)
                try:
                    await asyncio.wait_for(got.wait(), 2.0)
                except TimeoutError:
                    pass
                await asyncio.sleep(rng.uniform(*INTERVAL))
        finally:
            await watcher.stop()
    return [delivered[i] - closed[i] for i in range(WARMUP, len(files)) if i in delivered and i in closed]


def bench() -> Iterable[Figure]:
    files = _mosaic_files(VOLUMES + WARMUP)
    size_note = f"{SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} int16 mosaic, {len(files[0][1]) / 1e6:.1f} MB, n={VOLUMES}"
    cases = (("ingest_event", False, False), ("ingest_poll", True, False), ("ingest_moved", False, True))
    for name, polling, moved in cases:
        latencies = asyncio.run(_measure(polling, files, moved))
        missing = VOLUMES - len(latencies)
        note = size_note + (f", {missing} volumes lost" if missing else "")
        yield timing(name, latencies, note)
    latencies = asyncio.run(_measure_slices(_slice_files(SLICE_VOLUMES + WARMUP)))
    missing = SLICE_VOLUMES - len(latencies)
    note = f"{SLICES} slices of 64x64 int16 per volume, last slice closed -> Volume, n={SLICE_VOLUMES}"
    yield timing("ingest_slices", latencies, note + (f", {missing} volumes lost" if missing else ""))
