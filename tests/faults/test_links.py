"""Link faults between the console and the worker / subject agent: random cuts, stalls, frozen processes.

Expected: nothing is lost; every volume's feedback reaches the stimulus program once, in order.
"""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import pytest

from . import scenario as S
from .ledger import assert_balanced

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240 * (1 + S.SOAK))]


async def test_random_cuts_of_both_links_lose_nothing(rig, series: Path) -> None:
    seed = S.seed()
    rng = random.Random(seed)
    tr = 0.3
    volumes = 30 * (1 + 4 * S.SOAK)
    cuts = 6 * (1 + 4 * S.SOAK)
    print(f"fault seed {seed} (RTCONTROL_FAULT_SEED={seed} replays it)")
    setup = await S.start(rig, worker_proxy=True, agent_proxy=True)

    async def cut_at_random(s: S.Setup) -> None:
        await s.stimulus.wait_feedback(0, timeout=30)
        loop = asyncio.get_running_loop()
        span = volumes * tr
        # every link is back 1 s before the last volume: a cut as the run ends is its own test below
        deadline = loop.time() + span - 1.0
        for n in range(cuts):
            await asyncio.sleep(rng.uniform(0.2, span / cuts))
            proxy, which = rng.choice([(s.worker_proxy, "worker"), (s.agent_proxy, "subject")])
            down = rng.uniform(0.0, 1.2)
            if loop.time() + down > deadline:
                s.note(f"cut {n + 1} and later: not made, too close to the end of the run")
                break
            s.note(f"cut {n + 1}: {which} link down {down:.2f} s")
            proxy.cut(stay_down=True)
            await asyncio.sleep(down)
            proxy.restore()

    try:
        out = await S.run_scenario(setup, series, tr=tr, volumes=volumes, fault=cut_at_random)
    finally:
        await S.close(setup)
    context = f"seed {seed}\n" + out.context()
    assert_balanced(out.ledger, context)
    assert out.ledger.received == list(range(volumes)), context
    assert out.status == 0, context


async def test_a_stalled_link_delivers_everything_when_it_flows_again(rig, series: Path) -> None:
    """The proxy forwards nothing for 2.5 s, both links at once, mid-run."""
    tr, volumes = 0.3, 24
    setup = await S.start(rig, worker_proxy=True, agent_proxy=True)

    async def stall(s: S.Setup) -> None:
        await s.stimulus.wait_feedback(6, timeout=30)
        s.note("both links stalled 2.5 s")
        await asyncio.gather(s.worker_proxy.stall(2.5), s.agent_proxy.stall(2.5))

    try:
        out = await S.run_scenario(setup, series, tr=tr, volumes=volumes, fault=stall)
    finally:
        await S.close(setup)
    assert_balanced(out.ledger, out.context())
    assert out.ledger.received == list(range(volumes)), out.context()
    assert out.status == 0, out.context()


@pytest.mark.parametrize("frozen", ["worker", "agent"])
async def test_a_frozen_process_catches_up_after_sigcont(rig, series: Path, frozen: str) -> None:
    """``kill -STOP`` the worker (or the subject agent) for 3 s mid-run, then ``kill -CONT``."""
    tr, volumes = 0.3, 24
    setup = await S.start(rig)

    async def freeze(s: S.Setup) -> None:
        proc = s.worker.proc if frozen == "worker" else s.agent.proc
        await s.stimulus.wait_feedback(6, timeout=30)
        s.note(f"SIGSTOP {frozen} for 3 s")
        proc.signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(3.0)
        finally:
            proc.signal(signal.SIGCONT)

    try:
        out = await S.run_scenario(setup, series, tr=tr, volumes=volumes, fault=freeze)
    finally:
        await S.close(setup)
    assert_balanced(out.ledger, out.context())
    assert out.ledger.received == list(range(volumes)), out.context()
    assert out.status == 0, out.context()


async def test_a_subject_link_cut_as_the_run_ends_still_delivers_the_last_values(rig, series: Path) -> None:
    """The subject link drops just before the last volumes' feedback and is back 2 s later, well within the
    console's wait at the end of a run: the README promises what is in flight is delivered first."""
    tr, volumes = 0.3, 16
    setup = await S.start(rig, agent_proxy=True)

    async def cut_at_the_end(s: S.Setup) -> None:
        await s.stimulus.wait_feedback(volumes - 3, timeout=30)
        s.agent_proxy.cut(stay_down=True)
        s.note(f"subject link cut after feedback {volumes - 3} reached the program, back 2 s later")
        await asyncio.sleep(2.0)
        s.agent_proxy.restore()

    try:
        out = await S.run_scenario(setup, series, tr=tr, volumes=volumes, fault=cut_at_the_end)
    finally:
        await S.close(setup)
    assert_balanced(out.ledger, out.context())
    assert out.ledger.received == list(range(volumes)), out.context()
    assert out.status == 0, out.context()
