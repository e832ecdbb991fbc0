"""Searchlight per volume on Dask: ``projects/searchlight`` with a LocalCluster of 1 and of 2 processes.

The synthetic run of ``main.py synth`` (64x64x36, 3x3x3.5 mm, 1 mm motion, activation box), the project's
default settings (window 40 volumes, radius 2, motion correction); each volume's ``process()`` is timed
from volume ``min_volumes`` on (before that there is no searchlight). The cluster is the worker's own
(:class:`rtcontrol.worker.cluster.DaskCluster`: processes on 127.0.0.1, one thread each) and the project
talks to it exactly as in a run (:class:`rtcontrol.worker.parallel.DaskParallel`).

``BENCH searchlight processes=N``: whole ``process()`` per volume (motion correction, sharing this
volume's window, the map over the brain, the region and feedback); ``searchlight_median_ms`` is the
parallel part alone. ``BENCH searchlight_speedup``: median per volume with 1 process / with 2.
The machine's other load shows in the ratio: a 2-core machine shared with other work gives less than 2.
"""

from __future__ import annotations

import asyncio
import time
from typing import Iterator

import numpy as np

from rtcontrol.bench.stats import Figure, timing
from rtcontrol.paths import app_root
from rtcontrol.project import Result, RunContext, resolve_settings
from rtcontrol.scanner.synth import SynthSpec, SynthRun, generate
from rtcontrol.worker.cluster import DaskCluster
from rtcontrol.worker.parallel import DaskParallel
from rtcontrol.worker.projects import load_project_class

VOLUMES = 30  # 20 before the first searchlight, 10 timed


def per_volume(run: SynthRun, processes: int) -> tuple[list[float], list[float], dict]:
    """Seconds per volume (whole process()) and of the searchlight alone, and the last metrics."""
    cluster = DaskCluster(processes=processes)
    address = asyncio.run(cluster.address())
    folder = app_root() / "projects" / "searchlight"
    cls = load_project_class(folder)
    parallel = DaskParallel(lambda: address, project_dir=folder)
    try:
        ctx = RunContext.local(resolve_settings(cls.settings, {}), tr=run.spec.tr, parallel=parallel)
        project = cls()
        project.start_run(ctx)
        total, searchlight, metrics = [], [], {}
        for t in range(run.spec.volumes):
            volume = run.to_volume(t)
            t0 = time.perf_counter()
            result = Result.of(project.process(volume, ctx))
            elapsed = time.perf_counter() - t0
            if "searchlight_s" in result.metrics:
                total.append(elapsed)
                searchlight.append(result.metrics["searchlight_s"])
                metrics = result.metrics
        return total, searchlight, metrics
    finally:
        parallel.close()
        asyncio.run(cluster.close())


def bench() -> Iterator[Figure]:
    run = generate(SynthSpec(volumes=VOLUMES))
    box = run.truth["activation"]["box_voxels"]
    medians = {}
    for processes in (1, 2):
        total, searchlight, metrics = per_volume(run, processes)
        figure = timing("searchlight", total)
        centre = [metrics.get(k, np.nan) for k in ("region_i", "region_j", "region_k")]
        found = all(lo - 0.5 <= c <= hi - 0.5 for c, (lo, hi) in zip(centre, box))
        figure.values = {"processes": processes, **figure.values,
                         "searchlight_median_ms": float(np.median(searchlight) * 1e3),
                         "region_in_box": int(found)}
        figure.note = f"64x64x36, window 40, radius 2; {len(total)} volumes"
        medians[processes] = figure.values["median_ms"]
        yield figure
    yield Figure("searchlight_speedup", {"ratio": medians[1] / medians[2]},
                 "median per volume with 1 process / with 2 (2 cores shared with other work)")
