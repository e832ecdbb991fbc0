"""GUI cost per volume with every plot on, and event-loop stalls during a live run.

* ``gui_update``: for each 64x64x36 volume (with feedback, motion, FD, ROI mean, a full
  timeline and the project's t-map, decoded from its wire frame, drawn as the activation overlay),
  the controller's events reach the window, every panel repaints and Qt paints the frame
  (``processEvents``); the GUI thread's CPU time for all of it per volume (wall time beside it).
  Offscreen platform, one core.
* ``gui_loop_stall``: the demo run (embedded worker and subject agent over TLS, simulated
  scanner) at TR 0.5 s with the window open; a 10 ms asyncio timer records how late it fires.
  ``max_ms`` is the longest the loop was held (target: no stall over 50 ms).

``RTCONTROL_BENCH_GUI_VOLUMES`` and ``RTCONTROL_BENCH_STALL_VOLUMES`` change the counts.
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

from benchmarks.stats import Figure, timing

SHAPE = (64, 64, 36)


def _app():  # type: ignore[no-untyped-def]
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtWidgets

    from rtcontrol.gui import theme

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    app.setQuitOnLastWindowClosed(False)  # one benchmark's window closing must not stop the next one's loop
    theme.apply(app)
    return app


def _window(tmp: Path, settings=None):  # type: ignore[no-untyped-def]
    from PySide6 import QtCore

    from rtcontrol.console import settings as settings_io
    from rtcontrol.console.session import ConsoleSession
    from rtcontrol.gui.main_window import MainWindow

    session = ConsoleSession(settings or settings_io.default_settings(), runs_dir=tmp / "runs",
                             **({"demo": True} if settings is None else {}))
    store = QtCore.QSettings(str(tmp / "layout.ini"), QtCore.QSettings.Format.IniFormat)
    window = MainWindow(session, settings_store=store)
    window.resize(1600, 1000)
    return session, window


def dispose(window: Any, app: Any) -> None:
    """Delete a window now, on this (the GUI) thread: left to the garbage collector, Qt objects could be
    destroyed from a worker thread of a later benchmark."""
    window.close()
    window.deleteLater()
    app.processEvents()
    gc.collect()


def gui_update(volumes: int) -> Figure:
    from rtcontrol.console import events as ev
    from rtcontrol.link.codec import encode_map, map_from_parts, split_blob
    from rtcontrol.scanner.volume import Timeline, Volume

    app = _app()
    rng = np.random.default_rng(0)
    base = (800 + 200 * rng.random(SHAPE)).astype(np.uint16)
    affine = np.diag([3.0, 3.0, 3.5, 1.0])
    with tempfile.TemporaryDirectory(prefix="rtcontrol-bench-gui-") as tmp:
        session, window = _window(Path(tmp))
        c = session.controller
        c.model.reset("bench")
        c.model.roi_mask = np.zeros(SHAPE, bool)
        c.model.roi_mask[28:36, 28:36, 16:20] = True
        window.show()
        app.processEvents()
        c.events.publish(ev.StateChanged(ev.RUNNING, "bench"))
        # t-maps as the worker sends them: noise with an active blob over the ROI, a few different ones
        t_maps = []
        for n in range(4):
            t = rng.normal(0.0, 1.0, SHAPE).astype(np.float32)
            t[28:36, 28:36, 16:20] += 6.0 + n
            t_maps.append(encode_map("bench", 0, "t", t, affine))
        times: list[float] = []
        cpu_times: list[float] = []
        for i in range(volumes):
            data = base + np.uint16(i % 7)
            v = Volume(data, affine, run="bench", index=i, tr=0.5)
            t = time.monotonic()
            for stage, dt in (("file_seen", 0.0), ("file_complete", 0.001), ("parsed", 0.002)):
                v.timeline.stamp(stage, t + dt)
            # what the controller does for a volume, its feedback and the delivery (model + events)
            start, cpu = time.perf_counter(), time.thread_time()
            c.model.add_volume(v, t)
            c.events.publish(ev.VolumeArrived(v))
            metrics = {"tx": 0.01 * i, "ty": 0.0, "tz": 0.02, "rx": 0.0, "ry": 0.01, "rz": 0.0, "fd": 0.05,
                       "roi_mean": 900.0 + i % 10}
            tl = Timeline({**v.timeline.stamps, "sent": t + 0.003, "worker_received": t + 0.004,
                           "result_ready": t + 0.006, "feedback_received": t + 0.007})
            c.model.add_feedback(i, 0.5, metrics, tl)
            c.events.publish(ev.FeedbackArrived("bench", i, 0.5, metrics, tl))
            d = Timeline({"subject_delivered": t + 0.008})
            c.model.add_delivery(i, d)
            c.events.publish(ev.Delivered("bench", i, d))
            t_map, map_affine, peak = map_from_parts(*split_blob(t_maps[i % len(t_maps)]))  # as the worker link
            c.handle_map("bench", i, "t", t_map, map_affine, peak)
            window.refresh()  # every panel repaints its data
            app.processEvents()  # Qt paints the frame
            cpu_times.append(time.thread_time() - cpu)
            times.append(time.perf_counter() - start)
        dispose(window, app)
    fig = timing("gui_update", cpu_times[10:],
                 note=f"{SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]}, every panel, offscreen; CPU time of the GUI thread "
                      "(wall_* beside it includes waiting for other processes on a shared machine)")
    wall = np.asarray(times[10:]) * 1e3
    fig.values["wall_median_ms"] = float(np.median(wall))
    fig.values["wall_p99_ms"] = float(np.percentile(wall, 99))
    return fig


def gui_loop_stall(volumes: int, tr: float = 0.5) -> Figure:
    import qasync

    from rtcontrol.console import settings as settings_io
    from rtcontrol.gui.app import open_session

    app = _app()
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    lateness: list[float] = []
    with tempfile.TemporaryDirectory(prefix="rtcontrol-bench-stall-") as tmp:
        s = settings_io.default_settings().with_values("run", tr=tr, expected_volumes=volumes)
        session, window = _window(Path(tmp), s)
        session.demo = True
        window.show()
        c = session.controller

        async def probe(stop: asyncio.Event) -> None:
            period = 0.01
            while not stop.is_set():
                t = loop.time()
                await asyncio.sleep(period)
                lateness.append(max(0.0, loop.time() - t - period))

        async def main() -> None:
            stop = asyncio.Event()
            await open_session(window, session, start=True)
            while c.model.volumes == 0:  # the synthetic series is written first (not part of the run)
                await asyncio.sleep(0.05)
            task = asyncio.create_task(probe(stop))
            await c.wait_ended(timeout=volumes * tr + 120)
            stop.set()
            await task
            await session.close()

        with loop:
            loop.run_until_complete(main())
        dispose(window, app)
        asyncio.set_event_loop(None)
    ms = np.asarray(lateness) * 1e3
    return Figure(
        "gui_loop_stall",
        {"max_ms": float(ms.max()) if ms.size else 0.0, "p99_ms": float(np.percentile(ms, 99)) if ms.size else 0.0,
         "over_50ms": int((ms > 50).sum()), "volumes": c.model.volumes, "n": int(ms.size)},
        note=f"demo run at TR {tr:g} s with the window and every plot on; 10 ms probe",
    )


def bench() -> Iterable[Figure]:
    yield gui_update(int(os.environ.get("RTCONTROL_BENCH_GUI_VOLUMES", "300")))
    yield gui_loop_stall(int(os.environ.get("RTCONTROL_BENCH_STALL_VOLUMES", "120")))
