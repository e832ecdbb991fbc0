"""``BENCH first_volume``: is the first volume of a console's first run as fast as the others?

Each repetition starts a fresh console process (``python -m benchmarks.first_volume --child``: nothing
imported ahead, as when ``main.py`` starts), which runs the :mod:`benchmarks.e2e` set-up (console controller,
the embedded worker as its own process, the embedded subject agent, TLS on loopback) on a short synthetic
run written into its watch folder one file per TR. The figure per volume is the file's close (stamped by
the writing thread) to the feedback received by the console, in one monotonic clock: the ``template``
project gives no feedback value for its baseline volume 0, so the subject agent never sees that one, but
its result still travels back like every other.

* ``median_ms``/``p99_ms``/``max_ms``: volume 0, over the repetitions.
* ``others_median_ms``: the median over repetitions of each run's median for volumes 1..N-1.
* ``excess_median_ms``/``excess_max_ms``: volume 0 minus its own run's others' median; ``excess_<stamp>_ms``:
  the same per stage (the time up to that stamp from the one before it, the first from the file's close).

``RTCONTROL_BENCH_FIRST_RUNS`` (default 5), ``RTCONTROL_BENCH_FIRST_VOLUMES`` (default 10) and
``RTCONTROL_BENCH_FIRST_TR`` (default 0.5) set the size.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.stats import Figure, timing

ROOT = Path(__file__).resolve().parents[1]


def _child(series: Path, tmp: Path, tr: float) -> None:
    """One fresh console: run the e2e set-up once and print each volume's close -> feedback in ms."""
    from benchmarks.e2e import PATH, run_e2e

    r = asyncio.run(run_e2e(series, "template", {"baseline": 1}, tr, tmp))
    ms = [(f - c) * 1e3 for c, f in zip(r["closed"], r["feedback_received"], strict=True)]
    stages: dict[str, list[float | None]] = {}
    before = r["closed"]
    for name in PATH:  # each stage's time per volume: from the stamp before it
        now = r["stamps"][name]
        stages[name] = [(b - a) * 1e3 if math.isfinite(b - a) else None for a, b in zip(before, now, strict=True)]
        before = now
    print(json.dumps({"to_console_ms": [x if math.isfinite(x) else None for x in ms], "stages_ms": stages,
                      "files": r["files"], "feedbacks": r["feedbacks"], "errors": r["errors"]}), flush=True)


def _run_once(series: Path, tmp: Path, tr: float, timeout: float) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.first_volume", "--child", str(series), str(tmp), str(tr)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the console process failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def bench() -> Iterable[Figure]:
    from rtcontrol.scanner.synth import SynthSpec, write_run

    runs = int(os.environ.get("RTCONTROL_BENCH_FIRST_RUNS", "5"))
    volumes = int(os.environ.get("RTCONTROL_BENCH_FIRST_VOLUMES", "10"))
    tr = float(os.environ.get("RTCONTROL_BENCH_FIRST_TR", "0.5"))
    first: list[float] = []
    others: list[float] = []
    excess: list[float] = []
    stage_excess: dict[str, list[float]] = {}
    lost = errors = 0
    with tempfile.TemporaryDirectory(prefix="rtcontrol-bench-first-") as tmp_name:
        tmp = Path(tmp_name)
        series = tmp / "series"
        write_run(SynthSpec(volumes=volumes, tr=tr, seed=11), series)
        for k in range(runs):
            work = tmp / f"console-{k}"
            work.mkdir()
            r = _run_once(series, work, tr, timeout=120 + volumes * tr)
            lat = r["to_console_ms"]
            lost += r["files"] - r["feedbacks"]
            errors += len(r["errors"])
            rest = [x for x in lat[1:] if x is not None]
            if not lat or lat[0] is None or not rest:
                continue
            first.append(lat[0] / 1e3)
            others.append(float(np.median(rest)))
            excess.append(lat[0] - others[-1])
            for name, values in r["stages_ms"].items():  # where volume 0's extra time went
                later = [x for x in values[1:] if x is not None]
                if values[0] is not None and later:
                    stage_excess.setdefault(name, []).append(values[0] - float(np.median(later)))
    fig = timing("first_volume", first, f"volume 0 of a fresh console's first run, {runs} consoles x {volumes} "
                                        f"volumes at TR {tr:g} s, file closed -> feedback at the console")
    if others:
        fig.values["others_median_ms"] = float(np.median(others))
        fig.values["excess_median_ms"] = float(np.median(excess))
        fig.values["excess_max_ms"] = float(np.max(excess))
        for name, values in stage_excess.items():  # volume 0 minus the others, per stage (median over consoles)
            fig.values[f"excess_{name}_ms"] = round(float(np.median(values)), 2)
    fig.values["lost"] = int(lost)
    fig.values["errors"] = int(errors)
    yield fig


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]))
