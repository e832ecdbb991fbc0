"""The scanner simulator replays real and synthetic series into a folder the watcher reads."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rtcontrol.cli import main as cli_main
from rtcontrol.scanner.replay import plan_replay, replay
from rtcontrol.scanner.synth import SynthSpec, generate, write_run
from rtcontrol.scanner.watcher import ScanWatcher

SPEC = dict(volumes=5, shape=(24, 24, 9), voxel_mm=(4.0, 4.0, 5.0), tr=1.5, block_volumes=2, seed=11)


async def watch_replay(source: Path, watch: Path, n: int, **kw):
    volumes, events = [], []
    async with ScanWatcher(watch, volumes.append, events.append):
        written = await replay(source, watch, **kw)
        deadline = time.monotonic() + 10
        while len(volumes) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    return written, volumes, events


async def test_synthetic_run_replays_at_the_tr_into_a_watched_folder(tmp_path: Path):
    spec = SynthSpec(**SPEC)
    run = generate(spec)
    src = write_run(spec, tmp_path / "src", run=run)
    assert plan_replay(src).tr == pytest.approx(1.5)  # the series' own TR
    watch = tmp_path / "watch"
    watch.mkdir()
    written, volumes, events = await watch_replay(src, watch, 5, tr=0.15)
    assert written == 5
    assert [v.index for v in volumes] == list(range(5))
    for v in volumes:
        np.testing.assert_array_equal(v.data, run.volume(v.index))
    seen = [v.timeline.get("file_complete") for v in volumes]
    assert 0.1 < np.median(np.diff(seen)) < 0.3, f"volumes should arrive about every 0.15 s: {np.diff(seen)}"
    assert not [e for e in events if e.kind in ("file_error", "gave_up", "duplicate")]


async def test_files_appear_then_grow_in_chunks(tmp_path: Path):
    spec = SynthSpec(**SPEC)
    src = write_run(spec, tmp_path / "src")
    watch = tmp_path / "watch"
    watch.mkdir()
    target = watch / sorted(p.name for p in src.glob("*.dcm"))[0]
    sizes: set[int] = set()
    done = threading.Event()

    def sample() -> None:
        deadline = time.monotonic() + 10
        while not done.is_set() and time.monotonic() < deadline:
            try:
                sizes.add(target.stat().st_size)
            except FileNotFoundError:
                pass
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        await replay(src, watch, tr=0.05, chunks=4, chunk_pause=0.05, count=1)
        await asyncio.sleep(0.05)
    finally:
        done.set()
        sampler.join()
    final = (src / target.name).stat().st_size
    assert final in sizes
    assert len([s for s in sizes if 0 < s < final]) >= 2, f"expected partial sizes, saw {sorted(sizes)}"
    assert target.read_bytes() == (src / target.name).read_bytes()


async def test_per_slice_series_writes_each_volume_within_the_tr(tmp_path: Path, dicom_root: Path):
    watch = tmp_path / "watch"
    watch.mkdir()
    times: list[float] = []
    written, volumes, events = await watch_replay(
        dicom_root / "ge_epi_nih_10vol", watch, 3, tr=0.3, count=3, chunks=1,
        on_volume=lambda i, paths: times.append(time.monotonic()),
    )  # fmt: skip
    assert written == 3 and len(list(watch.iterdir())) == 45
    assert [v.index for v in volumes] == [0, 1, 2]
    assert {v.shape for v in volumes} == {(64, 64, 15)}
    assert np.all(np.diff(times) < 0.6)
    plan = plan_replay(dicom_root / "ge_epi_nih_10vol")
    assert plan.tr == pytest.approx(5.0) and len(plan.volumes) == 10
    assert all(len(v.files) == 15 for v in plan.volumes)


async def test_4d_nifti_is_written_one_volume_per_file(tmp_path: Path):
    spec = SynthSpec(**SPEC)
    run = generate(spec)
    img = nib.Nifti1Image(run.data.astype(np.int16), run.affine)
    img.header.set_zooms((4.0, 4.0, 5.0, 1.5))
    nib.save(img, tmp_path / "bold.nii.gz")
    watch = tmp_path / "watch"
    watch.mkdir()
    written, volumes, _ = await watch_replay(tmp_path / "bold.nii.gz", watch, 4, tr=0.05, start_index=1)
    assert written == 4
    assert sorted(p.name for p in watch.glob("*.nii")) == [f"bold_{i:04d}.nii" for i in range(2, 6)]
    assert sorted(p.name for p in watch.glob("*.json")) == [f"bold_{i:04d}.json" for i in range(2, 6)]
    assert [v.index for v in volumes] == [1, 2, 3, 4]
    for v in volumes:
        np.testing.assert_array_equal(v.data, run.volume(v.index))
        np.testing.assert_allclose(v.affine, run.affine, atol=1e-5)
        assert v.tr == pytest.approx(1.5)  # pixdim[4] of the 4-D file (no sidecar, no slice fields)
        assert v.slice_timing is None


MB_TIMING = [0.0, 0.5, 0.1, 0.6, 0.2, 0.7, 0.3, 0.8, 0.4]  # 9 slices, interleaved


async def test_4d_nifti_with_sidecar_arrives_with_its_tr_slice_timing_and_indices(tmp_path: Path):
    """A dcm2niix/BIDS-style run: the watcher gets each volume with the recorded TR and SliceTiming,
    and indices 0..n-1 in order, although the source sidecar says AcquisitionNumber 1 (as dcm2niix writes)
    and the file's stem ends in digits."""
    import json

    spec = SynthSpec(**SPEC)
    run = generate(spec)
    img = nib.Nifti1Image(run.data.astype(np.int16), run.affine)
    img.header.set_zooms((4.0, 4.0, 5.0, 9.0))  # a header TR the sidecar overrides
    nib.save(img, tmp_path / "sub-01_task-nf_run-01_echo-1.nii.gz")
    side = {"RepetitionTime": 1.5, "SliceTiming": MB_TIMING, "AcquisitionNumber": 1, "TaskName": "nf",
            "EchoTime": 0.03, "Manufacturer": "Siemens"}
    (tmp_path / "sub-01_task-nf_run-01_echo-1.json").write_text(json.dumps(side))
    plan = plan_replay(tmp_path / "sub-01_task-nf_run-01_echo-1.nii.gz")
    assert plan.tr == pytest.approx(1.5)
    watch = tmp_path / "watch"
    watch.mkdir()
    written, volumes, events = await watch_replay(plan, watch, 5, tr=0.05)
    assert written == 5 and [v.index for v in volumes] == list(range(5))
    assert len({v.run for v in volumes}) == 1
    for v in volumes:
        np.testing.assert_array_equal(v.data, run.volume(v.index))
        assert v.tr == pytest.approx(1.5)
        assert v.slice_timing == pytest.approx(MB_TIMING)
        assert v.header["EchoTime"] == 0.03 and v.header["AcquisitionNumber"] == v.index + 1
    # sidecars are not files to report
    assert not [e for e in events if e.kind in ("file_error", "gave_up", "duplicate", "gap")]


async def test_4d_nifti_header_timing_in_milliseconds(tmp_path: Path):
    """No sidecar: TR from pixdim[4] in the header's time unit, slice timing from slice_code/slice_duration."""
    spec = SynthSpec(**SPEC)
    run = generate(spec)
    img = nib.Nifti1Image(run.data.astype(np.int16), run.affine)
    hdr = img.header
    hdr.set_xyzt_units("mm", "msec")
    hdr.set_zooms((4.0, 4.0, 5.0, 1500.0))
    hdr.set_dim_info(slice=2)
    hdr["slice_duration"] = 100.0  # ms
    hdr["slice_end"] = 8
    hdr.set_slice_times([0.0, 500.0, 100.0, 600.0, 200.0, 700.0, 300.0, 800.0, 400.0])
    nib.save(img, tmp_path / "bold.nii")
    watch = tmp_path / "watch"
    watch.mkdir()
    written, volumes, _ = await watch_replay(tmp_path / "bold.nii", watch, 5, tr=0.05)
    assert written == 5 and [v.index for v in volumes] == list(range(5))
    assert all(v.tr == pytest.approx(1.5) for v in volumes)
    assert all(v.slice_timing == pytest.approx(MB_TIMING) for v in volumes)


async def test_bids_func_folder_replays_its_4d_run_one_volume_per_file(tmp_path: Path):
    """A folder holding a 4-D NIfTI (a BIDS func/ folder) replays it volume by volume, not the whole file again
    and again."""
    spec = SynthSpec(**SPEC)
    run = generate(spec)
    func = tmp_path / "func"
    func.mkdir()
    img = nib.Nifti1Image(run.data.astype(np.int16), run.affine)
    img.header.set_zooms((4.0, 4.0, 5.0, 1.5))
    nib.save(img, func / "sub-01_task-nf_bold.nii.gz")
    (func / "sub-01_task-nf_events.tsv").write_text("onset\tduration\n0\t1\n")
    plan = plan_replay(func)
    assert [v.index for v in plan.volumes] == list(range(5)) and plan.tr == pytest.approx(1.5)
    watch = tmp_path / "watch"
    watch.mkdir()
    written, volumes, _ = await watch_replay(plan, watch, 5, tr=0.05)
    assert written == 5 and [v.index for v in volumes] == list(range(5))
    assert len(list(watch.glob("*.nii"))) == 5


async def test_stop_ends_a_replay_early(tmp_path: Path):
    src = write_run(SynthSpec(**SPEC), tmp_path / "src")
    watch = tmp_path / "watch"
    watch.mkdir()
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.5, stop.set)
    t0 = time.monotonic()
    written = await replay(src, watch, tr=0.3, stop=stop)
    assert 1 <= written < 5 and time.monotonic() - t0 < 1.0


def test_cli_reports_bad_input_clearly(tmp_path: Path, capsys):
    assert cli_main(["replay", str(tmp_path / "missing"), str(tmp_path / "w")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image\n")
    assert cli_main(["replay", str(tmp_path / "empty"), str(tmp_path / "w")]) == 2
    assert "no scanner images to replay" in capsys.readouterr().err


def test_cli_replays(tmp_path: Path, capsys):
    src = write_run(SynthSpec(**SPEC), tmp_path / "src")
    assert cli_main(["replay", str(src), str(tmp_path / "w"), "--tr", "0.01", "--count", "2"]) == 0
    assert len(list((tmp_path / "w").glob("*.dcm"))) == 2
    out = capsys.readouterr()
    assert "replayed 2 volumes" in out.out
    assert "skipping truth.json" in out.err  # the simulator's truth file is not an image
