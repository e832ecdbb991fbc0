"""The worker process is killed (SIGKILL) mid-run and started again on the same port.

Expected (issue 12, item 3): the console notices the new worker, starts the run there again, sends the
volumes it already has to rebuild the project's state (their feedback is catch-up, not shown to the subject),
then goes on live; feedback reaches the stimulus program again within 2 TRs of the worker being back. The
volumes whose feedback was not shown are named by the console, and the run's BIDS export holds every volume's
metrics once, the catch-up ones marked as such (result_source in the confounds).
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from . import scenario as S
from .ledger import assert_balanced

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def test_a_killed_worker_is_restarted_and_the_run_goes_on(rig, series: Path) -> None:
    tr, volumes = 1.0, 20
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

    runs = rig.tmp / "runs"
    try:
        out = await S.run_scenario(setup, series, tr=tr, volumes=volumes, fault=kill_and_restart,
                                   worker_restarted=True, runs_dir=runs)
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
    assert_exported(runs, volumes, set(out.ledger.received), context)


def _table(path: Path) -> list[dict[str, str]]:
    lines = path.read_text().splitlines()
    cols = lines[0].split("\t")
    return [dict(zip(cols, line.split("\t"))) for line in lines[1:]]


def assert_exported(runs: Path, volumes: int, shown: set[int], context: str) -> None:
    """The BIDS export of a resumed run: a confounds row with metrics for every volume (the ledger project's
    metric 'index' is the volume's index), live exactly where the subject was shown the feedback, catch-up
    elsewhere; events.tsv lists each shown feedback once."""
    stem = S.run_id()
    deriv = runs / "bids/derivatives/rtcontrol/sub-01/ses-01/func"
    confounds = _table(deriv / f"{stem}_desc-confounds_timeseries.tsv")
    table = "\n".join("\t".join(r.values()) for r in confounds)
    assert [int(r["volume"]) for r in confounds] == list(range(volumes)), table
    assert all(r.get("index") not in (None, "n/a") and float(r["index"]) == int(r["volume"]) for r in confounds), \
        f"volumes without their metrics in the confounds:\n{table}\n{context}"
    assert all(float(r["feedback"]) == int(r["volume"]) for r in confounds), table
    live = {int(r["volume"]) for r in confounds if r["result_source"] == "live"}
    catch_up = {int(r["volume"]) for r in confounds if r["result_source"] == "catch_up"}
    assert live == shown and catch_up == set(range(volumes)) - shown, f"{table}\nshown: {sorted(shown)}\n{context}"
    assert catch_up, f"no volume had only a catch-up result: the scenario did not test the export\n{context}"
    events = _table(runs / "bids/sub-01/ses-01/func" / f"{stem}_events.tsv")
    assert sorted(int(r["volume"]) for r in events if r["trial_type"] == "feedback") == sorted(shown)
    runlog = json.loads((deriv / f"{stem}_desc-runlog.json").read_text())
    assert runlog["results"]["catch_up_only"] == sorted(catch_up) and runlog["results"]["none"] == []
    print(f"BIDS export: catch-up only {sorted(catch_up)}, live {len(live)}")
