"""A crash, a power cut or a full disk never loses what was already written; problems are reported, not raised."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rtcontrol.paths import app_root
from rtcontrol.recording import Recorder, RecordingError, find_interrupted, preflight, recover
from rtcontrol.recording.journal import JOURNAL, read_journal
from rtcontrol.scanner.synth import SynthRun
from tests.support.recording import record, run_settings

CRASHING_CONSOLE = r"""
import os, sys, time
from pathlib import Path
from rtcontrol.recording import Recorder
from rtcontrol.scanner.synth import SynthSpec, generate
run = generate(SynthSpec(volumes=12, tr=1.0, shape=(16, 16, 10), block_volumes=3, seed=3))
rec = Recorder(Path(sys.argv[1]), {"run": {"subject": "07", "session": "02", "task": "nf", "run": 3, "tr": 1.0}})
for i in range(6):
    v = run.to_volume(i, run="r")
    v.timeline.stamp("file_seen")
    rec.record_volume(v)
    rec.record_feedback("r", i, float(i), {}, v.timeline)
rec.drain()
print("six volumes on disk", flush=True)
for i in range(6, 12):
    rec.record_volume(run.to_volume(i, run="r"))
os._exit(9)  # the console dies mid-run: no finish(), no close(), queued records may be lost
"""


def test_a_killed_console_leaves_a_run_that_can_be_finished(tmp_path: Path, synth_run: SynthRun) -> None:
    run_dir = tmp_path / "runs" / "sub-07_run-03"
    done = subprocess.run([sys.executable, "-c", CRASHING_CONSOLE, str(run_dir)], capture_output=True, text=True,
                          timeout=120, cwd=app_root())
    assert done.returncode == 9, done.stderr
    assert "six volumes on disk" in done.stdout
    with open(run_dir / JOURNAL, "ab") as fh:  # and the power went while a line was being written
        fh.write(b'{"type":"feedback","run":"r","index":6,"feedb')

    journal = read_journal(run_dir)
    assert journal.torn_tail and not journal.finished
    assert find_interrupted(tmp_path / "runs") == [run_dir]

    bold = recover(run_dir)
    assert bold == tmp_path / "runs/bids/sub-07/ses-02/func/sub-07_ses-02_task-nf_run-03_bold.nii.gz"
    data = np.asarray(nib.load(bold).dataobj)
    n = data.shape[-1]
    assert 6 <= n <= 12
    np.testing.assert_array_equal(data, synth_run.data[..., :n])
    runlog = json.loads(next((tmp_path / "runs/bids/derivatives").rglob("*desc-runlog.json")).read_text())
    assert runlog["recovered_after_interruption"] is True and runlog["torn_last_line"] is True
    assert find_interrupted(tmp_path / "runs") == []


class FillingDisk:
    """os.write that behaves like a disk running full: a short write, then ENOSPC until space is freed."""

    def __init__(self) -> None:
        self.full = threading.Event()
        self.short_written = False

    def __call__(self, fd: int, data) -> int:
        if self.full.is_set():
            if not self.short_written and len(data) > 8:
                self.short_written = True
                return os.write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, data)


def test_a_full_disk_is_reported_and_what_was_written_stays(tmp_path: Path, synth_run: SynthRun) -> None:
    disk = FillingDisk()
    reported: list[str] = []
    rec = Recorder(tmp_path / "run", run_settings(), write=disk, on_error=reported.append)
    record(rec, synth_run, indices=range(4))
    rec.drain()
    disk.full.set()
    record(rec, synth_run, indices=range(4, 7))  # must not raise into the caller
    rec.drain()
    assert len(reported) == 1 and "full" in reported[0] and str(tmp_path / "run") in reported[0]
    assert rec.lost >= 3 and rec.errors == reported

    journal = read_journal(tmp_path / "run")  # readable, whole lines only, the first four volumes intact
    assert not journal.torn_tail
    assert [r["index"] for r in journal.volumes()] == [0, 1, 2, 3]
    assert (tmp_path / "run/volumes.raw").stat().st_size == 4 * synth_run.data[..., 0].nbytes

    disk.full.clear()  # the operator freed space: recording goes on
    record(rec, synth_run, indices=range(7, 9))
    data = np.asarray(nib.load(rec.finish()).dataobj)
    assert data.shape[-1] == 9
    np.testing.assert_array_equal(data[..., :4], synth_run.data[..., :4])
    np.testing.assert_array_equal(data[..., 7:], synth_run.data[..., 7:9])
    runlog = json.loads(next(tmp_path.rglob("*desc-runlog.json")).read_text())
    assert runlog["volumes"]["missing"] == [4, 5, 6]


async def test_errors_reach_the_event_loop_thread(tmp_path: Path, synth_run: SynthRun) -> None:
    disk = FillingDisk()
    disk.full.set()
    disk.short_written = True
    got: asyncio.Queue = asyncio.Queue()
    loop = asyncio.get_running_loop()
    rec = Recorder(tmp_path / "run", run_settings(), write=disk, loop=loop,
                   on_error=lambda msg: got.put_nowait((threading.get_ident(), msg)))
    rec.record_volume(synth_run.to_volume(0))
    ident, message = await asyncio.wait_for(got.get(), 10)
    assert ident == threading.get_ident() and "full" in message
    rec.close()


def test_preflight_refuses_a_folder_that_cannot_be_written(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        probe = folder / "probe"
        try:
            probe.write_bytes(b"x")  # root ignores permissions: use a read-only file system instead
            probe.unlink()
            if not Path("/sys/kernel").is_dir():
                pytest.skip("running as root and no read-only file system (/sys) to test with")
            target = Path("/sys/kernel/rtcontrol-run")
        except PermissionError:
            target = folder / "run"
        with pytest.raises(RecordingError, match=r"cannot write to .*rtcontrol-run|cannot write to .*locked"):
            preflight(target, expected_volumes=100, volume_bytes=300_000)
    finally:
        folder.chmod(0o755)


def test_preflight_refuses_a_disk_without_room(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match=r"only \d+ MB free, and this run needs about \d+ MB"):
        preflight(tmp_path / "run", expected_volumes=10**9, volume_bytes=300_000)
    ok = preflight(tmp_path / "run", expected_volumes=300, volume_bytes=300_000, bids_root=tmp_path / "bids")
    assert ok.free >= ok.needed > 300 * 300_000 and "GB free" in ok.summary()
    assert list((tmp_path / "run").iterdir()) == []  # the probe file is gone


def test_preflight_refuses_a_file_where_the_folder_should_be(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("not a folder")
    with pytest.raises(RecordingError, match="run"):
        preflight(tmp_path / "run", expected_volumes=10, volume_bytes=1000)


def test_a_recorder_in_an_unwritable_place_fails_at_once(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(RecordingError):
        Recorder(tmp_path / "file" / "run", run_settings())


def test_the_recovery_command_lists_and_finishes(tmp_path: Path, synth_run: SynthRun) -> None:
    rec = Recorder(tmp_path / "runs" / "a", run_settings())
    record(rec, synth_run, indices=range(3))
    rec.close()  # never finished
    cmd = [sys.executable, "-m", "rtcontrol.recording"]
    listed = subprocess.run([*cmd, "list", str(tmp_path / "runs")], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "sub-01 ses-01 task-nf run-1: 3 volumes recorded, started 20" in listed.stdout
    assert listed.stdout.rstrip().endswith("not finished")
    done = subprocess.run([*cmd, "finish", str(tmp_path / "runs")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "runs/bids/sub-01/ses-01/func/sub-01_ses-01_task-nf_run-01_bold.nii.gz").is_file()
    again = subprocess.run([*cmd, "list", str(tmp_path / "runs")], capture_output=True, text=True, timeout=60)
    assert "no interrupted run" in again.stdout


def test_a_damaged_journal_is_named_not_guessed(tmp_path: Path, synth_run: SynthRun) -> None:
    rec = Recorder(tmp_path / "run", run_settings())
    record(rec, synth_run, indices=range(2))
    rec.close()
    lines = (tmp_path / "run" / JOURNAL).read_bytes().split(b"\n")
    lines[2] = lines[2][:10]  # a line in the middle, not the torn tail of a crash
    (tmp_path / "run" / JOURNAL).write_bytes(b"\n".join(lines))
    with pytest.raises(ValueError, match=r"journal.jsonl, line 3: not a JSON record \(the journal is damaged\)"):
        read_journal(tmp_path / "run")
    assert find_interrupted(tmp_path) == [tmp_path / "run"]  # still offered to the operator


async def test_a_stalled_disk_never_blocks_the_caller(tmp_path: Path, synth_run: SynthRun) -> None:
    """The event loop only queues: with the disk stuck, five volumes are still taken at once."""
    gate = threading.Event()

    def stuck_write(fd: int, data) -> int:
        gate.wait(30)
        return os.write(fd, data)

    rec = Recorder(tmp_path / "run", run_settings(), write=stuck_write)
    for i in range(5):
        rec.record_volume(synth_run.to_volume(i))  # would hang here if the write happened on this thread
    await asyncio.sleep(0)
    assert rec.written_volumes == 0
    gate.set()
    await asyncio.to_thread(rec.drain)
    assert rec.written_volumes == 5 and rec.errors == []
    rec.close()
