"""The end-of-run summary of ``main.py run --no-gui``, from outside: the real command in its own process replays a
real scanner series with one volume's file taken out, a real subject agent passes feedback to a stimulus program
(``FeedbackClient``), and ``summary.json``/``summary.png`` beside the recording are checked against what the
stimulus program received and what the run's journal holds."""

from __future__ import annotations

import asyncio
import json
import struct
import sys
import zlib
from pathlib import Path

import pytest

from rtcontrol.paths import app_root
from rtcontrol.recording.summary import SPANS, from_journal
from rtcontrol.subject import FeedbackClient
from rtcontrol.subject.embedded import local_subject_agent

pytestmark = pytest.mark.timeout(240)

SERIES = "siemens_mosaic_ep2d_int_6vol"  # one mosaic file per volume, in acquisition order
LEFT_OUT = 2  # the volume whose file the "scanner" never writes
TR = 0.5
FD_THRESHOLD = 0.02  # small, so some of the real series' small head movements are over it


def series_without(source: Path, out: Path, index: int) -> Path:
    """The fixture series minus its ``index``-th file, as links to the fixture's files (read in place)."""
    out.mkdir()
    files = sorted(p for p in source.iterdir() if p.suffix == ".dcm")
    for i, f in enumerate(files):
        if i != index:
            (out / f.name).symlink_to(f)
    return out


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, after checking its signature and every chunk's CRC."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in chunk {kind!r}"
        chunks.append(kind)
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks, chunks
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_no_gui_summary_names_the_missing_volume_and_counts_what_reached_the_stimulus_program(
        tmp_path: Path, dicom_root: Path) -> None:
    series = series_without(dicom_root / SERIES, tmp_path / "series", LEFT_OUT)
    settings = tmp_path / "run.toml"
    settings.write_text(f"""
[run]
subject = "sum"
tr = {TR}
end_after_trs = 6
[project]
name = "roi_feedback"
[project.settings]
roi_kind = "box_voxel"
roi_lo = [10, 10, 5]
roi_hi = [40, 40, 15]
baseline_volumes = 2
expected_volumes = 20
[display]
fd_threshold = {FD_THRESHOLD}
""")
    runs = tmp_path / "runs"
    async with local_subject_agent(tcp_port=None) as agent:
        known = tmp_path / "known_hosts"
        known.write_text(f"{agent.url.removeprefix('wss://')} {agent.fingerprint}\n")
        fb = await asyncio.to_thread(FeedbackClient, agent.local_port)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(app_root() / "main.py"), "run", "--no-gui", "--replay", str(series),
                "--settings", str(settings), "--runs-dir", str(runs), "--subject", agent.url,
                "--subject-token", agent.token, "--subject-fingerprint", agent.fingerprint,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                env={**__import__("os").environ, "RTCONTROL_HOME": str(tmp_path / "home")})
            out, _ = await asyncio.wait_for(proc.communicate(), 180)
            text = out.decode(errors="replace")
            run_dir = next(runs.glob("sub-sum_*"))
            run_id = run_dir.name
            got = {}
            for i in range(6):
                try:
                    got[i] = fb.wait_for(i, timeout=0.0, run=run_id)
                except TimeoutError:
                    pass
        finally:
            await asyncio.to_thread(fb.close)

    summary = json.loads((run_dir / "summary.json").read_text())
    # the missing volume is named, in the file and in the printed summary
    assert summary["missing"] == [LEFT_OUT], text
    assert summary["received"] == 5 and summary["last_index"] == 5, summary
    assert f"MISSING 1: volume {LEFT_OUT}" in text, text
    assert proc.returncode == 1, text  # a volume was lost: a scripted run says so in its exit status
    # what the stimulus program received is what the summary counts as delivered, volume for volume
    assert sorted(got) == summary["outcomes"]["delivered"], (sorted(got), summary["outcomes"], text)
    assert summary["delivered"] == len(got) > 0, text
    journal = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
    fed = {r["index"]: r for r in journal if r.get("type") == "feedback"}
    valued = sorted(i for i, r in fed.items() if r["feedback"] is not None)
    assert summary["feedback_values"] == len(valued) and summary["feedback_computed"] == len(fed) == 5
    assert sorted(got) == valued, "a value was not delivered, but the summary cannot say why"
    assert all(not v for k, v in summary["outcomes"].items() if k != "delivered"), summary["outcomes"]
    assert LEFT_OUT not in fed
    # per-stage latency: a median for each stage the console measures, from every received volume
    for stage in ("watch", "ingest", "queue", "wire", "project", "back", "subject", "consumer", "file_to_feedback"):
        assert summary["latency_ms"][stage]["median"] is not None, (stage, summary["latency_ms"])
        assert summary["latency_ms"][stage]["median"] <= summary["latency_ms"][stage]["p99"]
    assert summary["latency_ms"]["ingest"]["n"] == 5 and set(summary["latency_ms"]) == set(SPANS)
    # FD: the worst and the count over the threshold agree with the FD the project reported per volume
    fd = {i: r["metrics"]["fd"] for i, r in fed.items() if isinstance(r["metrics"].get("fd"), (int, float))}
    assert fd, "the project reported no FD"
    assert summary["fd_threshold"] == FD_THRESHOLD
    assert summary["fd_max"] == pytest.approx(max(fd.values()))
    assert summary["fd_over"] == sorted(i for i, v in fd.items() if v > FD_THRESHOLD)
    assert isinstance(summary["scanner_late"], int) and isinstance(summary["analysis_late"], int)
    # the printed summary says where it is, and the picture is a real PNG of the stated size
    assert f"saved: {run_dir / 'summary.json'}, {run_dir / 'summary.png'}" in text, text
    assert png_size(run_dir / "summary.png") == (1200, 900)


def test_an_interrupted_run_finished_later_gets_a_summary_from_its_journal(tmp_path: Path) -> None:
    """``recording finish``: the summary of what the journal holds; what it does not (the subject agent's word,
    the late counts) is unknown (null), not zero."""
    import subprocess

    from tests.support.console import killed_run

    run_dir = killed_run(tmp_path / "runs")
    assert not (run_dir / "summary.json").exists()
    done = subprocess.run([sys.executable, "-m", "rtcontrol.recording", "finish", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    expected = from_journal(run_dir)
    assert summary["source"] == "journal" and summary["received"] == expected.received == 3
    assert summary["outcomes"] is None and summary["scanner_late"] is None and summary["analysis_late"] is None
    assert summary["missing"] == list(range(3, 10))  # 10 expected, 3 recorded
