"""Searchlight per volume on Dask: ``projects/searchlight`` with a LocalCluster of 1 and of 2 processes.

The synthetic run of ``main.py synth`` (64x64x36, 3x3x3.5 mm, 1 mm motion, activation box), the project's
default settings (window 40 volumes, radius 2, motion correction); each volume's ``process()`` is timed
from volume ``min_volumes`` on (before that there is no searchlight). The cluster is the worker's own
(:class:`rtcontrol.worker.cluster.DaskCluster`: processes on 127.0.0.1, one thread each) and the project
talks to it exactly as in a run (:class:`rtcontrol.worker.parallel.DaskParallel`).

``BENCH searchlight processes=N``: whole ``process()`` per volume (motion correction, sharing this
volume's window, the map over the brain, the region and feedback); ``searchlight_median_ms`` is the
parallel part alone. ``BENCH searchlight_speedup``: median per volume with 1 process / with 2
(``ratio_fastest``: of the fastest
volumes, the least disturbed by other work). The two set-ups run side by
side, volume by volume in turn, so both meet the same load; ``load_avg`` is the machine's 1-minute load
average: on 2 cores shared with other work the ratio stays well under 2.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import numpy as np

from benchmarks.stats import Figure, timing
from rtcontrol.paths import app_root
from rtcontrol.project import Result, RunContext, resolve_settings
from rtcontrol.scanner.synth import SynthSpec, generate
from rtcontrol.worker.cluster import DaskCluster
from rtcontrol.worker.parallel import DaskParallel
from rtcontrol.worker.projects import load_project_class

VOLUMES = 30  # 20 before the first searchlight, 10 timed
PROCESSES = (1, 2)


class Side:
    """One project instance on its own cluster of ``processes`` Dask processes."""

    def __init__(self, processes: int, tr: float) -> None:
        self.processes = processes
        self.cluster = DaskCluster(processes=processes)
        address = asyncio.run(self.cluster.address())
        folder = app_root() / "projects" / "searchlight"
        cls = load_project_class(folder)
        self.parallel = DaskParallel(lambda: address, project_dir=folder)
        self.ctx = RunContext.local(resolve_settings(cls.settings, {}), tr=tr, parallel=self.parallel)
        self.project = cls()
        self.project.start_run(self.ctx)
        self.total: list[float] = []
        self.searchlight: list[float] = []
        self.metrics: dict = {}

    def process(self, volume) -> None:
        t0 = time.perf_counter()
        result = Result.of(self.project.process(volume, self.ctx))
        elapsed = time.perf_counter() - t0
        if "searchlight_s" in result.metrics:
            self.total.append(elapsed)
            self.searchlight.append(result.metrics["searchlight_s"])
            self.metrics = result.metrics

    def close(self) -> None:
        self.parallel.close()
        asyncio.run(self.cluster.close())


def bench() -> Iterator[Figure]:
    run = generate(SynthSpec(volumes=VOLUMES))
    box = run.truth["activation"]["box_voxels"]
    sides: list[Side] = []
    try:
        for processes in PROCESSES:
            sides.append(Side(processes, run.spec.tr))
        for t in range(run.spec.volumes):  # the two in turn, volume by volume: both meet the same machine load
            for side in sides:
                side.process(run.to_volume(t))
    finally:
        for side in sides:
            side.close()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    medians, fastest = {}, {}
    for side in sides:
        figure = timing("searchlight", side.total)
        centre = [side.metrics.get(k, np.nan) for k in ("region_i", "region_j", "region_k")]
        found = all(lo - 0.5 <= c <= hi - 0.5 for c, (lo, hi) in zip(centre, box))
        figure.values = {"processes": side.processes, **figure.values,
                         "min_ms": float(np.min(side.total) * 1e3),
                         "searchlight_median_ms": float(np.median(side.searchlight) * 1e3),
                         "region_in_box": int(found)}
        figure.note = f"64x64x36, window 40, radius 2; {len(side.total)} volumes"
        medians[side.processes] = figure.values["median_ms"]
        fastest[side.processes] = figure.values["min_ms"]
        yield figure
    yield Figure("searchlight_speedup",
                 {"ratio": medians[1] / medians[2], "ratio_fastest": fastest[1] / fastest[2], "load_avg": load},
                 f"per volume with 1 process / with 2 (median; fastest volume); {os.cpu_count()} cores, "
                 "load average at the end")
