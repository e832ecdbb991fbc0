"""The watcher on a real folder, with the real fixture series written into it as a scanner would."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from rtcontrol.scanner.errors import IncompleteFile
from rtcontrol.scanner.reader import read_file
from rtcontrol.scanner.watcher import ScanWatcher
from tests.support.scanner import Sink, make_watcher, put, series_files, write

MODES = ["event", "polling"]


@pytest.fixture
def mosaic(dicom_root: Path) -> list[Path]:
    return series_files(dicom_root, "siemens_mosaic_ep2d_int_6vol")


@pytest.mark.parametrize("mode", MODES)
async def test_in_order_volumes_match_the_reader(tmp_path: Path, mosaic: list[Path], mode: str):
    sink = Sink()
    async with make_watcher(tmp_path, sink, mode) as w:
        for src in mosaic:
            await write(tmp_path / src.name, src.read_bytes())
        await sink.until(lambda: len(sink.volumes) == 6)
    assert [v.index for v in sink.volumes] == list(range(6))
    assert {v.run for v in sink.volumes} == {"series-004"}
    assert [e.run for e in sink.kinds("new_run")] == ["series-004"]
    for v, src in zip(sink.volumes, mosaic):
        ref = read_file(src)
        np.testing.assert_array_equal(v.data, ref.data)
        np.testing.assert_allclose(v.affine, ref.affine)
        tl = v.timeline
        assert tl.get("file_seen") <= tl.get("file_complete") <= tl.get("parsed")
    assert w.stats.volumes_emitted == 6 and w.stats.files_seen == 6 and w.stats.errors == 0
    assert w.stats.detected_format == "siemens_mosaic" and w.stats.series == ["series-004"]
    assert [e.kind for e in sink.events] == ["new_run", "run_end"]


@pytest.mark.parametrize("mode", MODES)
async def test_out_of_order_arrival_is_handed_on_in_acquisition_order(tmp_path, mosaic, mode):
    sink = Sink()
    async with make_watcher(tmp_path, sink, mode) as w:
        for n, i in enumerate([0, 2, 1, 5, 3, 4]):
            await write(tmp_path / mosaic[i].name, mosaic[i].read_bytes())
            await sink.until(lambda n=n: w.stats.files_seen == n + 1 and not any(s.busy for s in w._files.values()))
            if i == 2:
                await asyncio.sleep(0.05)
                assert [v.index for v in sink.volumes] == [0], "volume 2 must wait for volume 1"
        await sink.until(lambda: len(sink.volumes) == 6)
    assert [v.index for v in sink.volumes] == list(range(6))
    assert not sink.kinds("gap") and not sink.kinds("late")


@pytest.mark.parametrize("mode", MODES)
async def test_duplicates_are_ignored_with_an_event(tmp_path, mosaic, mode):
    sink = Sink()
    async with make_watcher(tmp_path, sink, mode) as w:
        await write(tmp_path / mosaic[0].name, mosaic[0].read_bytes())
        await sink.until(lambda: len(sink.volumes) == 1)
        await write(tmp_path / "resent.dcm", mosaic[0].read_bytes())  # the scanner sends it again
        await sink.until(lambda: len(sink.kinds("duplicate")) == 1)
        os.utime(tmp_path / mosaic[0].name, ns=(time.time_ns(), time.time_ns() + 10**9))  # only touched
        await sink.until(lambda: len(sink.kinds("duplicate")) == 2)
        await write(tmp_path / mosaic[0].name, mosaic[0].read_bytes())  # written again
        await sink.until(lambda: len(sink.kinds("duplicate")) == 3)
        await write(tmp_path / mosaic[1].name, mosaic[1].read_bytes())
        await sink.until(lambda: len(sink.volumes) == 2)
    assert [v.index for v in sink.volumes] == [0, 1]
    dup = sink.kinds("duplicate")[0]
    assert dup.run == "series-004" and dup.index == 0 and "again" in dup.message
    assert w.stats.duplicates == 3


@pytest.mark.parametrize("mode", MODES)
async def test_half_written_file_is_retried_until_complete(tmp_path, mosaic, mode):
    sink = Sink()
    raw = mosaic[0].read_bytes()
    dst = tmp_path / mosaic[0].name
    async with make_watcher(tmp_path, sink, mode, retry_interval=0.02):
        await write(dst, raw[: len(raw) // 2])
        await asyncio.sleep(0.3)  # several retries and events: still nothing handed on, nothing reported
        assert sink.volumes == [] and sink.events == []
        with open(dst, "ab") as f:
            f.write(raw[len(raw) // 2 :])
        await sink.until(lambda: len(sink.volumes) == 1)
    np.testing.assert_array_equal(sink.volumes[0].data, read_file(mosaic[0]).data)
    assert not sink.kinds("gave_up") and not sink.kinds("file_error")


@pytest.mark.parametrize("mode", MODES)
async def test_file_that_never_completes_is_given_up_and_the_run_goes_on(tmp_path, mosaic, mode):
    sink = Sink()
    raw = mosaic[0].read_bytes()
    async with make_watcher(tmp_path, sink, mode, incomplete_timeout=0.4, retry_interval=0.05) as w:
        await write(tmp_path / "stuck.dcm", raw[:5000])
        await sink.until(lambda: len(sink.kinds("gave_up")) == 1, timeout=5.0)
        await write(tmp_path / mosaic[0].name, raw)  # the scanner sends it again, whole
        await sink.until(lambda: len(sink.volumes) == 1)
    gave_up = sink.kinds("gave_up")[0]
    assert gave_up.path == tmp_path / "stuck.dcm"
    assert "stuck.dcm" in gave_up.message and "incomplete" in gave_up.message
    assert w.stats.errors == 1


async def test_slow_writer_is_not_given_up(tmp_path, mosaic):
    """The give-up clock runs from the last change: a file that keeps growing is waited for."""
    sink = Sink()
    raw = mosaic[0].read_bytes()
    dst = tmp_path / mosaic[0].name
    async with make_watcher(tmp_path, sink, "polling", incomplete_timeout=0.3, retry_interval=0.05):
        chunks = np.array_split(np.frombuffer(raw, np.uint8), 6)
        for chunk in chunks:
            with open(dst, "ab") as f:
                f.write(chunk.tobytes())
            await asyncio.sleep(0.15)  # 0.9 s in all, each step well within the timeout
        await sink.until(lambda: len(sink.volumes) == 1)
    assert not sink.kinds("gave_up")


@pytest.mark.parametrize("mode", MODES)
async def test_foreign_and_corrupt_files_are_reported_and_skipped(tmp_path, mosaic, mode):
    sink = Sink()
    ds = pydicom.dcmread(mosaic[2])
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5"  # pixel data nobody can decode
    async with make_watcher(tmp_path, sink, mode) as w:
        await write(tmp_path / mosaic[0].name, mosaic[0].read_bytes())
        await write(tmp_path / "protocol_notes.txt", b"Patient moved during run 2, repeat localizer.\n" * 20)
        await asyncio.to_thread(ds.save_as, tmp_path / "broken.dcm")
        await write(tmp_path / mosaic[1].name, mosaic[1].read_bytes())
        await sink.until(lambda: len(sink.volumes) == 2 and len(sink.kinds("file_error")) == 2)
    errors = {e.path.name: e.message for e in sink.kinds("file_error")}
    assert "foreign" in errors["protocol_notes.txt"] and "text" in errors["protocol_notes.txt"]
    assert "corrupt" in errors["broken.dcm"]
    assert [v.index for v in sink.volumes] == [0, 1]
    assert w.stats.errors == 2


async def test_two_series_make_two_runs(tmp_path, dicom_root, mosaic):
    other = series_files(dicom_root, "siemens_mosaic_ax_35sl")
    assert len(other) == 2
    sink = Sink()
    async with make_watcher(tmp_path, sink, "event") as w:
        for src in mosaic[:3]:
            await write(tmp_path / src.name, src.read_bytes())
        for n, src in enumerate(other):
            await write(tmp_path / f"ax_{n}.dcm", src.read_bytes())
        await sink.until(lambda: len(sink.volumes) == 3 + len(other))
    runs = [e.run for e in sink.kinds("new_run")]
    assert runs == ["series-004", "series-006"]
    by_run = {r: [v.index for v in sink.volumes if v.run == r] for r in runs}
    assert by_run["series-004"] == [0, 1, 2] and by_run["series-006"] == list(range(len(other)))
    assert {v.shape for v in sink.volumes if v.run == "series-006"} == {(64, 64, 35)}
    assert w.stats.series == runs


@pytest.mark.parametrize("mode", MODES)
async def test_per_slice_ge_series_is_assembled_into_volumes(tmp_path, dicom_root, mode):
    files = series_files(dicom_root, "ge_epi_nih_10vol")
    assert len(files) == 150
    by_volume: dict[int, list[Path]] = {}
    for f in files:
        by_volume.setdefault(read_file(f).temporal_index, []).append(f)
    order = []
    rng = random.Random(0)
    for t in sorted(by_volume):  # volumes in time, the slices of each in any order (not by instance number)
        rng.shuffle(by_volume[t])
        order += by_volume[t]
    sink = Sink()
    async with make_watcher(tmp_path, sink, mode) as w:
        def copy_all() -> None:
            for src in order:
                put(tmp_path / src.name, src.read_bytes())

        await asyncio.to_thread(copy_all)
        await sink.until(lambda: len(sink.volumes) == 10, timeout=20)
    assert [v.index for v in sink.volumes] == list(range(10))
    assert {v.shape for v in sink.volumes} == {(64, 64, 15)}
    assert {v.run for v in sink.volumes} == {"series-004"}
    assert w.stats.files_seen == 150 and w.stats.errors == 0
    assert [e.kind for e in sink.events] == ["new_run", "run_end"], [e.message for e in sink.events]
    for v in sink.volumes:
        assert v.timeline.get("file_seen") <= v.timeline.get("parsed")


async def test_gap_is_reported_and_later_volumes_released_and_late_one_still_delivered(tmp_path, mosaic):
    sink = Sink()
    async with make_watcher(tmp_path, sink, "event", gap_timeout=0.3):
        for i in (0, 2, 3):
            await write(tmp_path / mosaic[i].name, mosaic[i].read_bytes())
        await sink.until(lambda: len(sink.volumes) == 1 and len(sink.kinds("new_run")) == 1)
        t0 = time.monotonic()
        await sink.until(lambda: len(sink.volumes) == 3, timeout=5)
        assert time.monotonic() - t0 >= 0.1, "volumes 2, 3 must be held for the gap timeout"
        gap = sink.kinds("gap")[0]
        assert gap.index == 1 and "volume 1 did not arrive" in gap.message
        await write(tmp_path / mosaic[1].name, mosaic[1].read_bytes())
        await sink.until(lambda: len(sink.volumes) == 4)
    assert [v.index for v in sink.volumes] == [0, 2, 3, 1]
    assert sink.kinds("late")[0].index == 1


async def test_existing_files_are_read_only_when_asked(tmp_path, mosaic):
    for src in mosaic[:2]:
        put(tmp_path / src.name, src.read_bytes())
    sink = Sink()
    async with make_watcher(tmp_path, sink, "event"):
        await write(tmp_path / mosaic[2].name, mosaic[2].read_bytes())
        await sink.until(lambda: len(sink.volumes) == 1, timeout=5)
    assert [v.index for v in sink.volumes] == [2]  # 0 and 1 were there before: gap reported at stop
    sink2 = Sink()
    async with make_watcher(tmp_path, sink2, "event", existing=True):
        await sink2.until(lambda: len(sink2.volumes) == 3)
    assert [v.index for v in sink2.volumes] == [0, 1, 2]


async def test_nifti_volumes_dropped_by_a_converter(tmp_path, mosaic):
    import nibabel as nib

    sink = Sink()
    async with make_watcher(tmp_path, sink, "polling"):
        for i, src in enumerate(mosaic[:3]):
            v = read_file(src)
            img = nib.Nifti1Image(v.data, v.affine)
            await asyncio.to_thread(nib.save, img, tmp_path / f"func_{i + 1:04d}.nii")  # converters count from 1
        await sink.until(lambda: len(sink.volumes) == 3)
    assert [v.index for v in sink.volumes] == [0, 1, 2]
    assert sink.volumes[0].header.get("SourceFormat") == "nifti"
    assert len(sink.kinds("new_run")) == 1 and not sink.kinds("duplicate")
    np.testing.assert_array_equal(sink.volumes[2].data, read_file(mosaic[2]).data)


async def test_parsing_runs_off_the_event_loop(tmp_path, mosaic):
    loop_thread = threading.current_thread()
    threads = []
    attempts = {"n": 0}

    def reader(path: Path):
        threads.append(threading.current_thread())
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise IncompleteFile(path, "pretend the pixel data is short")
        time.sleep(0.2)  # a slow parse must not stall the loop
        return read_file(path)

    sink = Sink()
    ticks = []

    async def ticker():
        for _ in range(40):
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async with make_watcher(tmp_path, sink, "event", reader=reader, retry_interval=0.01):
        await write(tmp_path / mosaic[0].name, mosaic[0].read_bytes())
        await asyncio.gather(ticker(), sink.until(lambda: len(sink.volumes) == 1))
    assert threads and all(t is not loop_thread for t in threads)
    assert max(np.diff(ticks)) < 0.1, "the loop was blocked while a file was parsed"


async def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        await ScanWatcher(tmp_path / "nope", lambda v: None).start()


async def test_polling_still_sees_changes_to_settled_files(tmp_path, mosaic):
    """Polling stats a file that has been quiet for a second only once a second: changes are still seen."""
    from rtcontrol.scanner.watcher import SETTLE

    sink = Sink()
    async with make_watcher(tmp_path, sink, "polling"):
        await write(tmp_path / mosaic[0].name, mosaic[0].read_bytes())
        await sink.until(lambda: len(sink.volumes) == 1)
        await asyncio.sleep(SETTLE + 0.2)
        t0 = time.monotonic()
        os.utime(tmp_path / mosaic[0].name, ns=(time.time_ns(), time.time_ns() + 10**9))
        await sink.until(lambda: len(sink.kinds("duplicate")) == 1, timeout=5)
        assert time.monotonic() - t0 < SETTLE + 0.5
        await write(tmp_path / mosaic[1].name, mosaic[1].read_bytes())  # a new file is seen at once
        t1 = time.monotonic()
        await sink.until(lambda: len(sink.volumes) == 2, timeout=5)
        assert time.monotonic() - t1 < 0.5


@pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")  # watchdog re-adds a nested new folder
@pytest.mark.parametrize("mode", MODES)
async def test_recursive_watch_finds_series_in_new_sub_folders(tmp_path, mosaic, dicom_root, mode):
    """GE-style export: each series lands in a sub-folder made when the series starts."""
    other = series_files(dicom_root, "siemens_mosaic_ax_35sl")
    sink = Sink()
    async with make_watcher(tmp_path, sink, mode, recursive=True):
        (tmp_path / "s004").mkdir()
        for src in mosaic[:2]:
            await write(tmp_path / "s004" / src.name, src.read_bytes())
        (tmp_path / "s006" / "deeper").mkdir(parents=True)
        for n, src in enumerate(other):
            await write(tmp_path / "s006" / "deeper" / f"ax_{n}.dcm", src.read_bytes())
        (tmp_path / ".hidden").mkdir()
        await write(tmp_path / ".hidden" / mosaic[2].name, mosaic[2].read_bytes())  # never read
        await sink.until(lambda: len(sink.volumes) == 4)
        await asyncio.sleep(0.1)
    # in order within each run (files of two series parse in parallel, so runs may interleave)
    for run in ("series-004", "series-006"):
        assert [v.index for v in sink.volumes if v.run == run] == [0, 1]
    assert len(sink.volumes) == 4
    assert not sink.kinds("file_error") and not sink.kinds("duplicate")


async def test_sub_folders_are_ignored_unless_recursive(tmp_path, mosaic):
    sink = Sink()
    async with make_watcher(tmp_path, sink, "event", gap_timeout=0.2):
        (tmp_path / "sub").mkdir()
        await write(tmp_path / "sub" / mosaic[0].name, mosaic[0].read_bytes())
        await write(tmp_path / mosaic[1].name, mosaic[1].read_bytes())
        await sink.until(lambda: len(sink.volumes) == 1, timeout=5)
    assert [v.index for v in sink.volumes] == [1]


async def test_file_complete_but_never_closed_is_still_read(tmp_path, mosaic):
    """A writer that keeps the file open sends no close-write: the watcher tries it after a while."""
    sink = Sink()
    raw = mosaic[0].read_bytes()
    async with make_watcher(tmp_path, sink, "event"):
        with open(tmp_path / mosaic[0].name, "wb") as f:
            f.write(raw)
            f.flush()
            await sink.until(lambda: len(sink.volumes) == 1, timeout=5)
        await asyncio.sleep(0.2)  # now it is closed: the same bytes are not handed on twice
    assert not sink.kinds("duplicate") and len(sink.volumes) == 1


@pytest.mark.parametrize("empty_first", [False, True], ids=["written", "created_empty_then_written"])
@pytest.mark.parametrize("mode", MODES)
async def test_a_slow_file_does_not_hold_back_the_next(tmp_path: Path, mosaic: list[Path], mode: str,
                                                       empty_first: bool):
    """Parsing runs in the pool, not on the thread that receives file events: while one file is slow to
    read, the next file is read (and held for order), then both are handed on. The slow file is read by one
    pool thread at a time, also when it was first seen empty (a poll or an event, then the loop's own parse
    of it, had both pool threads reading it under load, so the next file waited for the slow one)."""
    release = threading.Event()
    parsed: dict[str, float] = {}
    reading = [0, 0]  # reads of the slow file now, most at once
    lock = threading.Lock()

    def reader(path: Path):
        if path.name == mosaic[1].name:
            with lock:
                reading[0] += 1
                reading[1] = max(reading)
            release.wait(30.0)  # a slow share, a hostile file (bounded: the test sets it)
            with lock:
                reading[0] -= 1
        out = read_file(path)
        parsed.setdefault(path.name, time.monotonic())
        return out

    sink = Sink()
    async with make_watcher(tmp_path, sink, mode, reader=reader, gap_timeout=60.0, retry_interval=0.02) as w:
        await write(tmp_path / mosaic[0].name, mosaic[0].read_bytes())
        await sink.until(lambda: len(sink.volumes) == 1)
        if empty_first:  # as a scanner that creates the file, then writes it (or a poll under load) is seen
            (tmp_path / mosaic[1].name).touch()
            await sink.until(lambda: (tmp_path / mosaic[1].name) in w._files)
        await write(tmp_path / mosaic[1].name, mosaic[1].read_bytes())
        await sink.until(lambda: reading[0] == 1)
        # the watcher's retry timers (0.02 s here) fire meanwhile: a retry of the file first seen empty must not
        # start a second read of it (under load this happened before the next file came, by chance)
        await asyncio.sleep(0.3)
        await write(tmp_path / mosaic[2].name, mosaic[2].read_bytes())
        try:
            await sink.until(lambda: mosaic[2].name in parsed)
            assert mosaic[1].name not in parsed  # read while the slow one still reads
        finally:
            release.set()
        await sink.until(lambda: len(sink.volumes) == 3)
    assert [v.index for v in sink.volumes] == [0, 1, 2]
    assert reading[1] == 1, f"the slow file was read by {reading[1]} pool threads at once"


async def test_file_renamed_in_from_another_folder_is_read_at_once(tmp_path, mosaic, monkeypatch):
    """Written elsewhere, then renamed into the watch folder: inotify reports a creation and no close.
    The file is read at once, not after the close fallback (made 60 s here so waiting for it fails)."""
    from rtcontrol.scanner import watcher as watcher_module

    monkeypatch.setattr(watcher_module, "CLOSE_WAIT", 60.0)
    watch, outside = tmp_path / "watch", tmp_path / "outside"
    watch.mkdir()
    outside.mkdir()
    sink = Sink()
    async with make_watcher(watch, sink, "event") as w:
        assert w._close_events, "needs inotify (Linux)"
        for src in mosaic[:3]:
            await write(outside / src.name, src.read_bytes())
            os.rename(outside / src.name, watch / src.name)
        await sink.until(lambda: len(sink.volumes) == 3, timeout=10)
    assert [v.index for v in sink.volumes] == [0, 1, 2]
    assert not sink.events or not sink.kinds("file_error")


async def test_volume_of_another_matrix_in_the_run_is_refused_and_the_run_goes_on(tmp_path, mosaic, dicom_root):
    """A real 64x64x35 mosaic re-tagged into the 64x64x36 run as its volume 2: refused with an error that
    names the file and both matrices; the real volume 2 and the rest still arrive, nothing is missing."""
    sink = Sink()
    odd = pydicom.dcmread(series_files(dicom_root, "siemens_mosaic_ax_35sl")[0])
    first = pydicom.dcmread(mosaic[0], stop_before_pixels=True)
    odd.SeriesInstanceUID = first.SeriesInstanceUID
    odd.SeriesNumber = first.SeriesNumber
    odd.AcquisitionNumber = 3
    async with make_watcher(tmp_path, sink, "event", gap_timeout=5.0):
        for n, src in enumerate(mosaic):
            if n == 2:
                await asyncio.to_thread(odd.save_as, tmp_path / "odd.dcm")
                await sink.until(lambda: sink.kinds("file_error"))
            await write(tmp_path / src.name, src.read_bytes())
        await sink.until(lambda: len(sink.volumes) == 6)
    assert [v.index for v in sink.volumes] == list(range(6)) and all(v.shape == (64, 64, 36) for v in sink.volumes)
    (error,) = sink.kinds("file_error")
    assert error.path is not None and error.path.name == "odd.dcm"
    assert "64x64x35" in error.message and "64x64x36" in error.message
    (end,) = sink.kinds("run_end")
    assert "missing" not in end.message


async def test_cut_short_file_is_named_when_its_gap_is_passed_over(tmp_path, mosaic):
    """Volume 2's file stops growing half-way: when later volumes go on past its gap, the file is named at
    once (not after the incomplete timeout, made 60 s here), and the run's end names the missing index."""
    sink = Sink()
    async with make_watcher(tmp_path, sink, "event", gap_timeout=1.0, incomplete_timeout=60.0):
        for n, src in enumerate(mosaic):
            data = src.read_bytes()
            await write(tmp_path / src.name, data[: len(data) // 2] if n == 2 else data)
        await sink.until(lambda: sink.kinds("gave_up"), timeout=10)
        await sink.until(lambda: len(sink.volumes) == 5)
    (gave_up,) = sink.kinds("gave_up")
    assert gave_up.path is not None and gave_up.path.name == mosaic[2].name
    assert [v.index for v in sink.volumes] == [0, 1, 3, 4, 5]
    (gap,) = sink.kinds("gap")
    assert gap.time <= gave_up.time
    (end,) = sink.kinds("run_end")
    assert end.message.endswith("missing: volume 2")
