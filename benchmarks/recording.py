"""Recording speed: what the console's event loop pays per volume, and what the disk pays behind it.

``BENCH record_call``: one ``Recorder.record_volume`` + ``record_feedback`` call pair on the caller's
thread (the event loop's cost; the work is queued). ``BENCH record_durable``: the writer thread's work
per 64x64x36 int16 volume (raw bytes appended and fdatasync'ed, then the journal line and its sync), so
a power cut loses at most the volume in flight. ``BENCH record_finish_200``: writing the BIDS run
(gzipped NIfTI, events, derivatives) of 200 such volumes at the end of a run. The files go to a
temporary folder under ``$RTCONTROL_BENCH_DIR`` (default: the system's temporary folder); point it
at the recording disk to measure that disk.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks.stats import Figure, timing
from rtcontrol.recording import Recorder
from rtcontrol.recording.journal import JournalFiles
from rtcontrol.scanner.volume import Volume

SHAPE = (64, 64, 36)
VOLUMES = 200


def _volumes(n: int) -> list[Volume]:
    rng = np.random.default_rng(0)
    base = rng.integers(200, 1200, SHAPE, dtype=np.int16)
    affine = np.diag([3.0, 3.0, 3.5, 1.0])
    out = []
    for i in range(n):
        v = Volume(data=base + np.int16(i % 7), affine=affine, run="bench", index=i, tr=2.0,
                   slice_timing=tuple(np.linspace(0, 1.9, SHAPE[2])), header={"Manufacturer": "Siemens"})
        v.timeline.stamp("file_seen")
        v.timeline.stamp("parsed")
        out.append(v)
    return out


def bench() -> Iterator[Figure]:
    root = Path(tempfile.mkdtemp(prefix="rtcontrol-bench-rec-", dir=os.environ.get("RTCONTROL_BENCH_DIR")))
    try:
        volumes = _volumes(VOLUMES)
        settings = {"run": {"subject": "01", "session": "01", "task": "bench", "run": 1, "tr": 2.0}}

        rec = Recorder(root / "calls", settings, bids_root=root / "bids")
        calls = []
        for v in volumes:
            t0 = time.perf_counter()
            rec.record_volume(v)
            rec.record_feedback("bench", v.index, 0.5, {"tx": 0.0}, v.timeline)
            calls.append(time.perf_counter() - t0)
            time.sleep(0.002)  # let the writer run, as between volumes of a real run
        yield timing("record_call", calls, "record_volume + record_feedback on the caller's thread")

        t0 = time.perf_counter()
        rec.finish()
        yield timing("record_finish_200", [time.perf_counter() - t0], "BIDS run of 200 volumes 64x64x36 int16")

        files = JournalFiles(root / "durable")
        durable = []
        for v in volumes:
            payload = v.data.tobytes(order="F")
            t0 = time.perf_counter()
            files.append_volume({"type": "volume", "index": v.index, "shape": list(SHAPE), "dtype": "<i2"}, payload)
            durable.append(time.perf_counter() - t0)
        files.close()
        yield timing("record_durable", durable, "writer thread: 288 kB appended + 2 fdatasync per volume")
    finally:
        shutil.rmtree(root, ignore_errors=True)
