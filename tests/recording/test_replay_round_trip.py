"""A recorded BIDS run replays as a live scan: record -> BIDS -> replay -> watcher -> the same voxels."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np

from rtcontrol.recording import Recorder, bids_run_source
from rtcontrol.scanner.replay import replay
from rtcontrol.scanner.synth import SynthRun
from rtcontrol.scanner.volume import Volume
from rtcontrol.scanner.watcher import ScanWatcher
from tests.support.recording import record, run_settings


async def test_recorded_run_replays_through_the_watcher(tmp_path: Path, synth_run: SynthRun) -> None:
    n = 6
    rec = Recorder(tmp_path / "run", run_settings())
    record(rec, synth_run, indices=range(n))
    await rec.afinish()
    source = bids_run_source(tmp_path / "bids", "01", "01", "nf", 1)

    watch = tmp_path / "watch"
    watch.mkdir()
    volumes: list[Volume] = []
    async with ScanWatcher(watch, volumes.append):
        written = await replay(source, watch, tr=0.05)
        deadline = time.monotonic() + 10
        while len(volumes) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    assert written == n and len(volumes) == n
    assert sorted(v.index for v in volumes) == list(range(n))  # 0-based, every volume once
    recorded = json.loads(source.with_name(source.name.replace(".nii.gz", ".json")).read_text())
    assert recorded["RepetitionTime"] == 1.0 and len(recorded["SliceTiming"]) == synth_run.data.shape[2]
    for t, v in enumerate(sorted(volumes, key=lambda v: v.index)):
        np.testing.assert_array_equal(v.data, synth_run.data[..., t])
        np.testing.assert_allclose(v.affine, synth_run.affine, atol=1e-5)
        # the replayed scan arrives with the TR and slice timing it was recorded with (per-volume sidecars)
        assert v.tr == recorded["RepetitionTime"]
        np.testing.assert_allclose(v.slice_timing, recorded["SliceTiming"], atol=1e-6)

    # ... and recorded again, the replayed scan gives the same BIDS voxels
    again = Recorder(tmp_path / "again", run_settings(run=2))
    for v in sorted(volumes, key=lambda v: v.index):
        again.record_volume(v)
    bold2 = await again.afinish()
    import nibabel as nib

    np.testing.assert_array_equal(np.asarray(nib.load(bold2).dataobj), np.asarray(nib.load(source).dataobj))
