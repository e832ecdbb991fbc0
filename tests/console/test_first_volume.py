"""The first volume pays for nothing the others do not: no module is imported on the console's event loop
between a run's start and its volumes' feedback.

A module imported there holds every callback of the loop back meanwhile: the ROI overlay's code (scipy via
``rtcontrol.analysis``), imported lazily when volume 0 arrived, held that volume's feedback back by ~300 ms
on every console's first run. The claim is about a fresh process (a test process has imported everything
already), so a new console process runs a real session (the embedded worker as its own process, the subject
agent, TLS on loopback, the real watcher and recorder) on a short synthetic scan, with an audit hook that
notes every import made on the loop's thread from the moment ``start_run`` returned until the feedback of
every volume has arrived. How fast the first volume is, is measured by ``BENCH first_volume``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rtcontrol.paths import app_root

CHILD = r"""
import asyncio, json, sys, threading
from dataclasses import replace
from pathlib import Path

from rtcontrol.console import settings as settings_io
from rtcontrol.console.session import ConsoleSession
from tests.support.console import scan_into, series_files

series, tmp = Path(sys.argv[1]), Path(sys.argv[2])
loop_imports: list[str] = []
watching = threading.Event()
loop_thread = threading.get_ident()


def hook(event, args):
    if event == "import" and watching.is_set() and threading.get_ident() == loop_thread:
        loop_imports.append(str(args[0]))


async def main() -> dict:
    watch = tmp / "watch"
    watch.mkdir()
    n = len(series_files(series))
    s = settings_io.default_settings()
    s = replace(s, run=replace(s.run, tr=0.5, expected_volumes=n, watch_folder=str(watch), end_after_trs=4.0),
                project=settings_io.ProjectSection("roi_feedback", {})).validate()
    session = ConsoleSession(s, runs_dir=tmp / "runs")
    c = session.controller
    await session.open()
    try:
        assert c.worker is not None and c.subject is not None, "links did not come up"
        await session.start_run()
        watching.set()
        await scan_into(series, watch, interval=0.2)
        for _ in range(200):  # bounded: 20 s
            if c.model.feedbacks >= n:
                break
            await asyncio.sleep(0.1)
        watching.clear()
        feedbacks = c.model.feedbacks
        await c.wait_ended(timeout=30)
    finally:
        await session.close()
    return {"imports": loop_imports, "volumes": n, "feedbacks": feedbacks}


sys.addaudithook(hook)
print(json.dumps(asyncio.run(main())))
"""


def test_no_import_on_the_event_loop_from_run_start_to_feedback(synth_series: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", CHILD, str(synth_series), str(tmp_path)], cwd=app_root(),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["feedbacks"] == result["volumes"], result
    assert result["imports"] == [], (
        f"imported on the console's event loop during the run (the first volume waits for it): {result['imports']}")
