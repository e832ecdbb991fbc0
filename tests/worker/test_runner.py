"""The run process hop itself: shared-memory and pipe transport give the project the same volume."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from rtcontrol.link.codec import encode_volume
from rtcontrol.worker.runner import RunProcess, SpareProcess, usable_shm_size
from rtcontrol.worker.store import RunStore
from tests.support.worker import make_volume, write_project

ECHO = """
    import numpy as np
    class Echo(Project):
        def process(self, volume, ctx):
            volume.data[0, 0, 0] += 1  # the project owns a writable copy
            return Result(feedback={"sum": int(volume.data.astype(np.int64).sum()), "shape": list(volume.shape),
                                    "dtype": str(volume.data.dtype), "index": volume.index})
"""


@pytest.mark.parametrize("shm_size", [64 << 20, 0], ids=["shared-memory", "pipe"])
async def test_volume_reaches_the_project_intact(tmp_path: Path, shm_size: int) -> None:
    folder = write_project(tmp_path / "p", "echo", ECHO)
    results: list[dict] = []
    done = asyncio.Event()

    def on_event(kind: str, fields: dict) -> None:
        if kind == "result":
            results.append(fields)
            if len(results) == 3:
                done.set()

    rp = RunProcess(project="echo", project_dir=folder, run="r", settings={}, tr=1.0,
                    store=RunStore(tmp_path / "runs", "r"), on_event=on_event, files=None, shm_size=shm_size)
    await rp.start()
    vols = [make_volume(i, shape=(20, 18, 6 + i), run="r") for i in range(3)]
    for v in vols:
        rp.submit(encode_volume(v), v.index, {"index": v.index})
    await asyncio.wait_for(done.wait(), 20)
    await rp.stop()
    assert rp.state == "ended"
    for v, r in zip(vols, results):
        fb = r["feedback"]
        assert fb["index"] == v.index and fb["shape"] == list(v.shape) and fb["dtype"] == "int16"
        assert fb["sum"] == int(v.data.astype(np.int64).sum()) + 1


PID = """
    import os
    class Pid(Project):
        def process(self, volume, ctx):
            return Result(feedback={"pid": os.getpid(), "secret": os.environ.get("RTCONTROL_TEST_MARK")})
"""


async def _one_result(tmp_path: Path, folder: Path, run: str, spare: SpareProcess) -> tuple[RunProcess, dict]:
    got: asyncio.Future = asyncio.get_running_loop().create_future()

    def on_event(kind: str, fields: dict) -> None:
        if kind == "result" and not got.done():
            got.set_result(fields["feedback"])

    rp = RunProcess(project="pid", project_dir=folder, run=run, settings={}, tr=1.0,
                    store=RunStore(tmp_path / "runs", run), on_event=on_event, files=None)
    await rp.start(spare)
    v = make_volume(0, run=run)
    rp.submit(encode_volume(v), 0, {"index": 0})
    feedback = await asyncio.wait_for(got, 20)
    await rp.stop()
    return rp, feedback


async def test_a_spare_process_runs_the_next_run_once_and_a_fresh_one_follows(tmp_path: Path, monkeypatch) -> None:
    folder = write_project(tmp_path / "p", "pid", PID)
    spare = SpareProcess()
    try:
        spare.fill(usable_shm_size())
        waiting = await spare.waiting()  # the spare is up before any run asks for it
        assert waiting is not None and waiting.proc.returncode is None
        first, fb1 = await _one_result(tmp_path, folder, "r1", spare)
        assert fb1["pid"] == waiting.proc.pid, "the run did not use the spare process"
        assert first.proc.returncode is not None  # the run's process ended with its run
        spare.fill(usable_shm_size())
        _, fb2 = await _one_result(tmp_path, folder, "r2", spare)
        assert fb2["pid"] not in (fb1["pid"],), "two runs shared one process"
        # a spare started before the environment changed is not used: the run sees the worker's environment
        spare.fill(usable_shm_size())
        stale = await spare.waiting()
        assert stale is not None
        monkeypatch.setenv("RTCONTROL_TEST_MARK", "set after the spare started")
        _, fb3 = await _one_result(tmp_path, folder, "r3", spare)
        assert fb3["pid"] != stale.proc.pid and fb3["secret"] == "set after the spare started"
        assert stale.proc.returncode is not None or await asyncio.wait_for(stale.proc.wait(), 10) is not None
    finally:
        await spare.close()


BAD_DESIGN = """
    class BadDesign(Project):
        def design(self, settings):
            return {"blocks": "not a Design"}

        def process(self, volume, ctx):
            return Result(feedback=1.0)
"""


async def test_a_failing_design_is_logged_and_the_run_goes_on(tmp_path: Path) -> None:
    """design() only feeds the console's shading: a wrong one is said in the project's log, the run starts."""
    folder = write_project(tmp_path / "p", "bad", BAD_DESIGN)
    logs: list[str] = []
    results: list[dict] = []
    rp = RunProcess(project="bad", project_dir=folder, run="r", settings={}, tr=1.0,
                    store=RunStore(tmp_path / "runs", "r"), files=None,
                    on_event=lambda kind, f: (logs if kind == "log" else results).append(f.get("message", f)))
    await rp.start()
    assert rp.design is None and rp.state == "running"
    v = make_volume(0, run="r")
    rp.submit(encode_volume(v), 0, {"index": 0})
    await rp.stop()
    assert rp.state == "ended" and any(r.get("feedback") == 1.0 for r in results if isinstance(r, dict))
    assert any("design() must return a rtcontrol.project.Design or None, not dict" in m for m in logs), logs
