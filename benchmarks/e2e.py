"""The whole path on loopback with TLS: a scanner file closed on disk to its feedback at the subject agent.

A synthetic run (Siemens mosaic, 64x64x36) is written into the watch folder one file per TR, the
way a scanner exports (temporary name, chunked writes, close, rename); the close time is stamped in
the writing thread. The console controller (watcher, recorder, worker link, subject link) runs as in
``main.py run``, with the embedded worker as its own process and the embedded subject agent, both
over TLS. The figure per volume is ``subject_delivered - closed`` in one clock (the link translates
the agent's stamps).

* ``e2e``: the ``template`` project (baseline of one volume), so the figure is the system's own cost.
* ``e2e_roi``: ``roi_feedback`` as shipped (motion correction, running model), ROI on the activation.

``RTCONTROL_BENCH_E2E_VOLUMES`` (default 600) and ``RTCONTROL_BENCH_E2E_TR`` (default 0.5) set the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.stats import Figure, timing

CHUNKS = 4


def _write_closed(src: Path, dst_dir: Path) -> float:
    """Write like a scanner export (temporary name, chunks, close, rename); the time the file was complete."""
    data = src.read_bytes()
    tmp = dst_dir / (src.name + ".part")
    step = -(-len(data) // CHUNKS)
    with open(tmp, "wb") as fh:
        for k in range(0, len(data), step):
            fh.write(data[k : k + step])
            fh.flush()
    tmp.rename(dst_dir / src.name)
    return time.monotonic()


async def _scan(files: list[Path], watch: Path, tr: float, closed: dict[int, float]) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i, f in enumerate(files):
        delay = t0 + i * tr - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        closed[i] = await asyncio.to_thread(_write_closed, f, watch)


async def run_e2e(series: Path, project: str, project_settings: dict[str, Any], tr: float, tmp: Path) -> dict[str, Any]:
    from rtcontrol.console import settings as settings_io
    from rtcontrol.console.session import ConsoleSession

    files = sorted(p for p in series.iterdir() if p.suffix != ".json")
    watch = tmp / f"watch-{project}"
    watch.mkdir()
    s = settings_io.default_settings()
    s = replace(
        s,
        run=replace(s.run, tr=tr, expected_volumes=len(files), watch_folder=str(watch), end_after_trs=20.0,
                    task=project.replace("_", "")),
        project=settings_io.ProjectSection(project, project_settings),
    ).validate()
    session = ConsoleSession(s, runs_dir=tmp / "runs")
    c = session.controller
    errors: list[str] = []
    c.events.subscribe(lambda e: errors.append(e.text) if getattr(e, "level", "") == "error" else None)
    closed: dict[int, float] = {}
    await session.open()
    try:
        if c.worker is None or c.subject is None:
            raise RuntimeError(f"links did not come up: {errors}")
        await session.start_run()
        await _scan(files, watch, tr, closed)
        await c.wait_ended(timeout=60 + 2 * tr)
    finally:
        await session.close()
    m = c.model
    delivered = m.stamps.values(m_stage("subject_delivered"))
    feedback_expected = [i for i in range(m.feedback.length) if np.isfinite(m.feedback.get(i))]
    lat = [delivered[i] - closed[i] for i in feedback_expected if i in closed and np.isfinite(delivered[i])]
    ok = [i for i in feedback_expected if i in closed]
    closed_arr = np.array([closed[i] for i in ok])

    def stage_ms(a: str | None, b: str) -> float:
        """Median ms between two stamps over the volumes with feedback (a=None: from the file's close)."""
        end = m.stamps.values(m_stage(b))[ok]
        start = closed_arr if a is None else m.stamps.values(m_stage(a))[ok]
        d = (end - start) * 1e3
        d = d[np.isfinite(d)]
        return float(np.median(d)) if d.size else float("nan")

    stages = {
        "watch_ms": stage_ms(None, "file_seen"),
        "ingest_ms": stage_ms("file_seen", "parsed"),
        "queue_ms": stage_ms("parsed", "sent"),
        "wire_ms": stage_ms("sent", "worker_received"),
        "project_ms": stage_ms("worker_received", "result_ready"),
        "back_ms": stage_ms("result_ready", "feedback_received"),
        "to_subject_ms": stage_ms("feedback_received", "subject_delivered"),
    }
    return {
        "stages": stages,
        "latency": lat,
        "volumes": m.volumes,
        "files": len(files),
        "feedbacks": m.feedbacks,
        "with_feedback": len(feedback_expected),
        "delivered": m.at_agent,  # at the subject agent (no stimulus program in this bench)
        "errors": errors,
        # per volume (NaN where absent), in the one monotonic clock: for benchmarks.first_volume
        "closed": [closed.get(i, float("nan")) for i in range(m.volumes)],
        "feedback_received": m.stamps.values(m_stage("feedback_received"))[: m.volumes].tolist(),
        "subject_delivered": delivered[: m.volumes].tolist(),
        "stamps": {s: m.stamps.values(m_stage(s))[: m.volumes].tolist() for s in PATH},
    }


#: The stamps on a volume's way from the watch folder to the console's feedback, in order.
PATH = ("file_seen", "parsed", "sent", "worker_received", "result_ready", "feedback_received")


def m_stage(stage: str) -> int:
    from rtcontrol.scanner.volume import STAGES

    return STAGES.index(stage)


def _figure(name: str, r: dict[str, Any], note: str) -> Figure:
    fig = timing(name, r["latency"], note)
    lost = (r["files"] - r["volumes"]) + (r["volumes"] - r["feedbacks"]) + (r["with_feedback"] - r["delivered"])
    fig.values["lost"] = int(lost)
    fig.values["errors"] = len(r["errors"])
    fig.values.update({k: round(v, 2) for k, v in r["stages"].items()})
    return fig


def _series(out: Path, volumes: int, tr: float) -> tuple[Path, dict[str, Any]]:
    from rtcontrol.scanner.synth import SynthSpec, write_run

    write_run(SynthSpec(volumes=volumes, tr=tr, seed=11), out)
    return out, json.loads((out / "truth.json").read_text())


def bench() -> Iterable[Figure]:
    volumes = int(os.environ.get("RTCONTROL_BENCH_E2E_VOLUMES", "600"))
    tr = float(os.environ.get("RTCONTROL_BENCH_E2E_TR", "0.5"))
    with tempfile.TemporaryDirectory(prefix="rtcontrol-bench-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        series, truth = _series(tmp / "series", volumes, tr)
        r = asyncio.run(run_e2e(series, "template", {"baseline": 1}, tr, tmp))
        yield _figure("e2e", r, f"template project, TR {tr:g} s, {volumes} volumes, TLS on loopback, "
                                "file closed -> subject agent")
        roi = _roi_settings(truth, volumes)
        r = asyncio.run(run_e2e(series, "roi_feedback", roi, tr, tmp))
        yield _figure("e2e_roi", r, f"roi_feedback as shipped (motion correction), TR {tr:g} s, {volumes} volumes")


def _roi_settings(truth: dict[str, Any], volumes: int) -> dict[str, Any]:
    """The shipped defaults, with the ROI on the simulated activation (voxel box) and the run length."""
    settings: dict[str, Any] = {"expected_volumes": max(10, volumes)}
    box = (truth.get("activation") or {}).get("box_voxels")
    if box:
        settings.update(roi_kind="box_voxel", roi_lo=[float(b[0]) for b in box], roi_hi=[float(b[1] - 1) for b in box])
    return settings
