"""``BENCH link_roundtrip``: console -> worker -> console for one 1.2 MB volume, TLS on loopback.

A worker subprocess (``main.py --worker``, as the console's embedded default starts it) runs the
template project; the console side sends a 96x96x66 int16 volume (1.2 MB, a typical EPI) and
waits for its feedback, one volume at a time. Also printed: where the time goes, from the
timeline stamps (console -> worker including TLS and the frame, worker -> run process ->
result, and back), and the CPU time per volume of the console and of the worker with its run
process, which depends less on what else the machine is doing (tick-sampled, so +-20% between runs).

Where the time goes (py-spy and stage stamps, 2 shared CPUs): the console encodes the frame
(~0.05 ms), websockets masks and serializes it (~0.1 ms), TLS encrypts ~1.2 MB (~0.4 ms); the
worker decrypts and parses it (~1 ms of CPU, mostly TLS and websockets' copies), hands it to the
run process through shared memory (~0.05 ms) and the template project takes ~0.25 ms. Two
changes matter most: the console writes a large frame to TLS in 256 KiB slices, so the worker
decrypts while the console still encrypts (:class:`rtcontrol.link.transport.SlicedWritesConnection`),
and the worker keeps freed memory (:mod:`rtcontrol.worker.malloc`), which had cost ~250 page
faults per volume. Together: median ~5 ms -> ~3 ms, worker CPU per volume ~3.6 -> ~1.5 ms.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable

import numpy as np

from benchmarks.stats import Figure, timing
from rtcontrol.scanner.volume import Volume

SHAPE = (96, 96, 66)
N = 300
WARMUP = 20


async def _measure(n: int) -> dict[str, list[float]]:
    from rtcontrol.link.events import route
    from rtcontrol.worker.client import FeedbackEvent, WorkerClient
    from rtcontrol.worker.embedded import local_worker

    rng = np.random.default_rng(0)
    base = (1000 + rng.normal(0, 20, SHAPE)).astype(np.int16)
    affine = np.diag([2.5, 2.5, 2.5, 1.0])
    got: asyncio.Queue[FeedbackEvent] = asyncio.Queue()
    out: dict[str, list[float]] = {"roundtrip": [], "to_worker": [], "in_worker": [], "to_console": []}
    async with local_worker() as w:
        on_event = route({FeedbackEvent: got.put_nowait})
        async with WorkerClient(w.url, w.token, expected_fingerprint=w.fingerprint, on_event=on_event) as c:
            await c.start_run("template", {"baseline": 5}, run="bench", tr=2.0)
            loop = asyncio.get_running_loop()
            for i in range(n + WARMUP):
                if i == WARMUP:
                    cpu0 = time.process_time(), _cpu_seconds(w.pid)
                vol = Volume(data=base, affine=affine, run="bench", index=i, tr=2.0)
                t0 = loop.time()
                await c.send_volume(vol)
                ev = await asyncio.wait_for(got.get(), 10)
                t1 = loop.time()
                if i < WARMUP:
                    continue
                tl = ev.timeline
                out["roundtrip"].append(t1 - t0)
                out["to_worker"].append(tl.between("sent", "worker_received") or 0.0)
                out["in_worker"].append(tl.between("worker_received", "result_ready") or 0.0)
                out["to_console"].append(tl.between("result_ready", "feedback_received") or 0.0)
            cpu1 = time.process_time(), _cpu_seconds(w.pid)
            await c.stop_run()
    out["cpu_console"] = [(cpu1[0] - cpu0[0]) / n]
    out["cpu_worker"] = [(cpu1[1] - cpu0[1]) / n] if cpu0[1] is not None and cpu1[1] is not None else []
    return out


def _cpu_seconds(pid: int | None) -> float | None:
    """CPU time of the worker process and its run processes (Linux /proc), None elsewhere."""
    if pid is None:
        return None
    try:
        tick = os.sysconf("SC_CLK_TCK")
        total, todo = 0.0, [pid]
        while todo:
            p = todo.pop()
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        return total
    except (OSError, ValueError, IndexError):
        return None


def bench() -> Iterable[Figure]:
    out = asyncio.run(_measure(N))
    mb = np.prod(SHAPE) * 2 / 1e6
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    yield timing("link_roundtrip", out["roundtrip"],
                 f"{SHAPE} int16 {mb:.2f} MB, wss loopback, template project; load {load:.1f} on {os.cpu_count()} CPUs")
    yield timing("link_to_worker", out["to_worker"], "sent -> worker received (encode, TLS, websocket)")
    yield timing("link_in_worker", out["in_worker"],
                 "worker received -> result ready (shared memory to the run process + project)")
    yield timing("link_to_console", out["to_console"], "result ready -> feedback received on the console")
    cpu = {"console_ms": out["cpu_console"][0] * 1e3}
    if out["cpu_worker"]:
        cpu["worker_ms"] = out["cpu_worker"][0] * 1e3
    yield Figure("link_cpu_per_volume", cpu, "CPU time per volume (independent of other load on the machine)")
