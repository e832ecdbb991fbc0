"""The run process hop itself: shared-memory and pipe transport give the project the same volume."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from rtcontrol.link.codec import encode_volume
from rtcontrol.worker.runner import RunProcess
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
