"""The worker process is killed (SIGKILL) mid-run and started again on the same port.

Expected (issue 12, item 3): the console notices the new worker, starts the run there again, sends the
volumes it already has to rebuild the project's state (their feedback is catch-up, not shown to the subject),
then goes on live; feedback reaches the stimulus program again within 2 TRs of the worker being back. The
volumes whose feedback was not shown are named by the console.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from . import scenario as S
from .ledger import assert_balanced

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def test_a_killed_worker_is_restarted_and_the_run_goes_on(rig, series: Path) -> None:
    tr, volumes = 0.8, 20
    setup = await S.start(rig)
    back: dict[str, float] = {}

    async def kill_and_restart(s: S.Setup) -> None:
        await s.stimulus.wait_feedback(5, timeout=30)
        s.note("SIGKILL the worker")
        s.worker.proc.signal(signal.SIGKILL)
        await s.worker.proc.wait(10)
        await asyncio.sleep(1.5)
        again = await s.rig.start_worker(s.worker.port)
        back["t"] = again.proc.time_of(r"WORKER READY") or 0.0
        s.note(f"worker restarted on port {again.port}")

    try:
        out = await S.run_scenario(setup, series, tr=tr, volumes=volumes, fault=kill_and_restart,
                                   worker_restarted=True)
    finally:
        await S.close(setup)
    context = out.context()
    assert_balanced(out.ledger, context)
    # the run went on live on the new worker, which rebuilt the project's state from every volume once
    assert out.ledger.received and out.ledger.received[-1] == volumes - 1, context
    assert len(out.ledger.worker) == 2 and out.ledger.worker[-1] == list(range(volumes)), context
    after = [r.t for r in setup.stimulus.feedback(S.run_id()) if r.t > back["t"]]
    assert after, context
    resumed = after[0] - back["t"]
    print(f"feedback resumed {resumed:.2f} s after the worker was back (TR {tr} s)")
    assert resumed <= 2 * tr, f"feedback resumed {resumed:.2f} s after the worker was back, over 2 TRs\n{context}"
