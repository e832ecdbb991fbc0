"""The shm data channel: IOCHAN's key and ring rules, and no dangling segment after close or a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rtcontrol.afni.shm import ShmReader, ShmWriter, segment_id, stat, string_to_key
from rtcontrol.afni.source import load_nifti
from tests.support.plug_realtime import FakeAfni, free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SysV shm channel is Linux-only")


def unique(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 1000}{time.monotonic_ns() % 10**6}"


def wait_gone(key: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if segment_id(key) is None:
            return True
        time.sleep(0.02)
    return False


def test_string_to_key_matches_iochan() -> None:
    # 666 + sum(byte << ((i % 3) * 8)): 'g'=103, 'r'=114<<8, 'v'=118<<16
    assert string_to_key("grv") == 666 + 103 + (114 << 8) + (118 << 16)
    assert string_to_key("grv", port_offset=20000) == string_to_key("grv") + 20000
    assert string_to_key("") == 666


def test_ring_layout_and_wraparound() -> None:
    name = unique("ring")
    writer = ShmWriter(name, 100, reaper=False)
    try:
        info = stat(writer.shmid)
        assert info is not None and info["segsz"] == 2 * 4 + 100 + 1  # int bstart, int bend, buf[SIZE+1]
        assert (writer.bstart, writer.bend) == (0, 100) and writer.readable() == 0 and writer.writable() == 100
        reader = ShmReader(name)
        assert writer.alive() and reader.bufsize == 101
        payload = bytes(range(256)) * 3
        got, offset = b"", 0
        for _ in range(1000):
            offset += writer.send(payload, offset)
            got += reader.recv(37)
            if len(got) == len(payload):
                break
        assert got == payload
        reader.close()  # AFNI's iochan_close: detach + remove
        assert not writer.alive()
    finally:
        writer.close()
    assert segment_id(writer.key) is None


def test_stale_unattached_segment_is_replaced_but_a_used_one_is_not() -> None:
    name = unique("stale")
    first = ShmWriter(name, 64, reaper=False)
    first.detach()  # as if the creator crashed before AFNI attached: nattch 0
    second = ShmWriter(name, 64, reaper=False)
    assert second.shmid != first.shmid and stat(first.shmid) is None
    with pytest.raises(OSError, match="in use"):
        ShmWriter(name, 64, reaper=False)
    second.close()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_before_afni_attaches_leaves_no_segment(sig: int) -> None:
    name = unique("kill")
    code = (
        "import sys, time\n"
        "from rtcontrol.afni.shm import ShmWriter\n"
        f"w = ShmWriter({name!r}, 4096)\n"
        "print(w.shmid, flush=True)\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        shmid = int(proc.stdout.readline())  # type: ignore[union-attr]
        key = string_to_key(name)
        assert segment_id(key) == shmid
        proc.send_signal(sig)
        proc.wait(5)
        assert wait_gone(key), f"segment {shmid} left after signal {sig}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_afni_feed_killed_mid_run_leaves_no_segment(rtfeedme_dir: Path, sig: int) -> None:
    name = unique("feed")
    key = string_to_key(name)
    with FakeAfni() as afni:
        cmd = [
            sys.executable, str(ROOT / "main.py"), "afni-feed", str(rtfeedme_dir / "tiny_s16.nii"),
            "--port", str(afni.control_port), "--shm", f"{name}:4K", "--dt", "400", "--wait", "5", "-q",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert afni.wait_images(1, timeout=20), "AFNI stand-in got no image"
            assert segment_id(key) is None  # marked for removal as soon as AFNI attached
            proc.send_signal(sig)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        assert afni.wait_sessions_done(1, timeout=10)  # AFNI saw the writer go: end of run
    [session] = afni.sessions
    [run] = session.runs
    assert 1 <= len(run.images) < 5 and run.partial == b""
    expected = load_nifti(rtfeedme_dir / "tiny_s16.nii")
    for vol, got in zip(expected, run.volumes()):
        np.testing.assert_array_equal(got, vol.data)
    if sig == signal.SIGTERM:
        assert proc.returncode == 130
    assert wait_gone(key)


def test_afni_feed_shm_without_afni_removes_segment(rtfeedme_dir: Path) -> None:
    name = unique("noafni")
    cmd = [
        sys.executable, str(ROOT / "main.py"), "afni-feed", str(rtfeedme_dir / "tiny_s16.nii"),
        "--port", str(free_port()), "--shm", name, "--wait", "0.3", "-q",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "not listening" in proc.stderr
    assert segment_id(string_to_key(name)) is None
