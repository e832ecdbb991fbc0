"""``main.py afni-feed``: a NIfTI file and a DICOM series to the plug_realtime stand-in, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from rtcontrol.afni.source import load_nifti, load_source
from tests.support.afni import assert_same_world, expected_values
from tests.support.plug_realtime import FakeAfni, free_port

ROOT = Path(__file__).resolve().parents[2]


def feed(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "main.py"), "afni-feed", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_feed_nifti_like_rtfeedme(rtfeedme_dir: Path) -> None:
    data_port = free_port()
    with FakeAfni() as afni:
        proc = feed(
            str(rtfeedme_dir / "tiny_f32.nii"), "--port", str(afni.control_port), "--data-port", str(data_port),
            "--prefix", "feedtest", "--note", "hello AFNI",
        )  # fmt: skip
        assert afni.wait_sessions_done(1)
    assert proc.returncode == 0, proc.stderr
    assert "5 of 5 volumes sent" in proc.stdout and "DATUM float" in proc.stdout
    [session] = afni.sessions
    assert session.control == f"tcp:127.0.0.1:{data_port}\0".encode()
    [run] = session.runs
    assert run.info["prefix"] == "feedtest" and run.info["notes"] == ["hello AFNI"]
    for vol, got in zip(load_nifti(rtfeedme_dir / "tiny_f32.nii"), run.volumes()):
        np.testing.assert_array_equal(got, vol.data)


def test_feed_dicom_series_oblique_scaled(dicom_root: Path) -> None:
    folder = dicom_root / "philips_epi_magdeburg"  # 13.3 deg oblique, Philips scaling -> float
    with FakeAfni() as afni:
        proc = feed(str(folder), "--port", str(afni.control_port), "--data-port", str(free_port()), "-q")
        assert afni.wait_sessions_done(1)
    assert proc.returncode == 0, proc.stderr
    [(_, volumes)] = load_source(folder).items()
    [run] = afni.sessions[0].runs
    assert "oblique" in run.info and run.info["datum"] == "float"
    for vol, got in zip(volumes, run.volumes()):
        np.testing.assert_array_equal(got, expected_values(vol, "float"))
    assert_same_world(run.world_ras(), volumes[0])


def test_feed_reports_bad_input_clearly(tmp_path: Path) -> None:
    proc = feed(str(tmp_path / "missing.nii"))
    assert proc.returncode == 2 and "missing.nii" in proc.stderr
    bad = tmp_path / "bad.nii"
    bad.write_bytes(b"not a nifti" * 40)
    proc = feed(str(bad))
    assert proc.returncode == 2 and "bad.nii" in proc.stderr


def test_feed_prints_afnis_motion(rtfeedme_dir: Path, motion_dir: Path) -> None:
    """--motion-port: AFNI connects back during the run; every TR is printed."""
    import socket

    motion_port = free_port()
    with FakeAfni() as afni:
        cmd = [
            sys.executable, str(ROOT / "main.py"), "afni-feed", str(rtfeedme_dir / "tiny_s16.nii"),
            "--port", str(afni.control_port), "--data-port", str(free_port()), "--dt", "200",
            "--motion-port", str(motion_port), "-q",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert afni.wait_images(1, timeout=20)
            with socket.create_connection(("127.0.0.1", motion_port), timeout=5) as s:  # as AFNI does
                s.sendall((motion_dir / "motion_only_v0.bin").read_bytes())
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    assert proc.returncode == 0, err
    assert "version 0, 6 values per TR" in out and "end of run after 10 TRs" in out
    tr5 = next(line for line in out.splitlines() if line.startswith("AFNI motion TR   5:"))
    assert float(tr5.split(":")[1].split()[1]) == 2.0977
