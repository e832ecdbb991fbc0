"""``BENCH console_memory growth_mb=..``: console memory over a 2000-volume run of 64x64x36.

The real controller runs a run whose volumes are handed to it directly (as the watcher would,
without disk or network, so the figure is the console's own bookkeeping): model, events, lateness
checks and the window's panels, repainted every few volumes. Resident memory (``/proc``) is
measured after a warm-up of 50 volumes and at the end. The recorder is off: fed this fast, its
writer's queue would measure the disk, not the console. ``RTCONTROL_BENCH_MEMORY_VOLUMES`` changes
the count.
"""

from __future__ import annotations

import asyncio
import gc
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.stats import Figure

SHAPE = (64, 64, 36)
WARMUP = 50


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class _NoWatcher:
    """The volumes come straight from the benchmark, so nothing is watched."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


async def _run(volumes: int, window: Any, app: Any) -> tuple[float, float, int]:
    from rtcontrol.console import settings as settings_io
    from rtcontrol.console.controller import ConsoleController
    from rtcontrol.scanner.volume import Timeline, Volume

    rng = np.random.default_rng(1)
    base = (800 + 200 * rng.random(SHAPE)).astype(np.uint16)
    affine = np.diag([3.0, 3.0, 3.5, 1.0])
    with tempfile.TemporaryDirectory(prefix="rtcontrol-bench-mem-") as tmp:
        s = settings_io.default_settings().with_values("run", tr=0.5, expected_volumes=0, end_after_trs=1e6,
                                                       watch_folder=tmp)
        c = ConsoleController(s, runs_dir=Path(tmp) / "runs", watcher_factory=lambda *a: _NoWatcher(),
                              record=False)
        if window is not None:
            window.attach(c)
        await c.start_run()
        start = 0.0
        for i in range(volumes):
            v = Volume(base + np.uint16(i % 5), affine, index=i, tr=0.5)
            t = time.monotonic()
            v.timeline.stamp("file_seen", t)
            c.handle_volume(v)
            metrics = {"tx": 0.01, "ty": 0.0, "tz": 0.0, "rx": 0.0, "ry": 0.0, "rz": 0.0, "fd": 0.02, "roi_mean": 900.0}
            c.handle_feedback(c.model.run, i, 0.5, metrics, Timeline({**v.timeline.stamps, "result_ready": t + 0.004}))
            c.handle_delivery(c.model.run, i, Timeline({"subject_delivered": t + 0.006}))
            if window is not None and i % 4 == 0:
                window.refresh()
                app.processEvents()
            if i % 50 == 0:
                await asyncio.sleep(0)  # let the controller's tasks run
            if i == WARMUP:
                gc.collect()
                start = rss_mb()
        for _ in range(3):  # let the deferred view updates of the last volumes run
            await asyncio.sleep(0)
        gc.collect()
        end = rss_mb()
        n = c.model.volumes
        await c.stop_run("benchmark over")
    return start, end, n


def console_memory(volumes: int) -> Figure:
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtWidgets

    from benchmarks.gui import _window, dispose

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    tmp = tempfile.mkdtemp(prefix="rtcontrol-bench-mem-win-")
    _, win = _window(Path(tmp))
    win.show()

    class Attached:
        def attach(self, controller: Any) -> None:
            win.attach_controller(controller)

        def refresh(self) -> None:
            win.refresh()

    try:
        start, end, n = asyncio.run(_run(volumes, Attached(), app))
    finally:
        dispose(win, app)
    return Figure(
        "console_memory",
        {"growth_mb": end - start, "start_mb": start, "end_mb": end, "volumes": n},
        note=f"{n} volumes of {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]}, controller + window models, after {WARMUP} warm-up",
    )


def bench() -> Iterable[Figure]:
    yield console_memory(int(os.environ.get("RTCONTROL_BENCH_MEMORY_VOLUMES", "2000")))
