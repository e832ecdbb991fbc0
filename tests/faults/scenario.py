"""One scripted run with real processes: worker and subject agent (optionally behind faulty proxies), a
stimulus program, the headless console and the scanner replay; a fault coroutine runs beside it.

:func:`run_scenario` returns everything the ledger needs; the caller decides what the fault should leave.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ledger as L
from .network import FaultyProxy
from .procs import Agent, Proc, Rig, Worker, write_settings
from .stimulus import Stimulus

#: ``make soak`` sets this: more volumes and more faults per scenario.
SOAK = int(os.environ.get("RTCONTROL_FAULT_SOAK", "0") or 0)


def seed() -> int:
    """The random seed of a scenario: ``RTCONTROL_FAULT_SEED`` to replay a failure, else a fresh one (logged)."""
    value = os.environ.get("RTCONTROL_FAULT_SEED")
    return int(value) if value else random.SystemRandom().randrange(1 << 31)


def run_id(run: int = 1) -> str:
    return f"sub-01_ses-01_task-faults_run-{run:02d}"


@dataclass
class Setup:
    rig: Rig
    worker: Worker
    agent: Agent
    stimulus: Stimulus
    worker_proxy: FaultyProxy | None = None
    agent_proxy: FaultyProxy | None = None
    console: Proc | None = None
    replay: Proc | None = None
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Something the fault did (printed with a failure's report)."""
        self.notes.append(text)
        print(f"[fault] {text}", flush=True)


@dataclass
class Outcome:
    setup: Setup
    status: int
    text: str
    ledger: L.Ledger

    def context(self) -> str:
        return ("faults: " + "; ".join(self.setup.notes) + f"\nconsole exit {self.status}; console output:\n"
                + self.text[-6000:])


async def start(rig: Rig, *, worker_proxy: bool = False, agent_proxy: bool = False,
                worker_args: tuple[str, ...] = ()) -> Setup:
    """Worker, subject agent and a stimulus program; proxies in front of them when asked."""
    worker, agent = await asyncio.gather(rig.start_worker(0, *worker_args), rig.start_agent())
    stim = await Stimulus(agent.tcp_port, agent.secret()).start()
    setup = Setup(rig, worker, agent, stim)
    if worker_proxy:
        setup.worker_proxy = FaultyProxy(worker.port)
    if agent_proxy:
        setup.agent_proxy = FaultyProxy(agent.port)
    return setup


def _url(port: int) -> str:
    return f"wss://127.0.0.1:{port}"


async def run_scenario(setup: Setup, series: Path, *, tr: float, volumes: int, run: int = 1,
                       fault: Callable[[Setup], Awaitable[Any]] | None = None, runs_dir: Path | None = None,
                       timeout: float | None = None, worker_restarted: bool = False) -> Outcome:
    """One run of ``volumes`` volumes at ``tr`` with ``fault(setup)`` running beside it; the ledger."""
    rig = setup.rig
    worker_url, agent_url = setup.worker.url, setup.agent.url
    if setup.worker_proxy is not None:
        worker_url = _url(setup.worker_proxy.port or await setup.worker_proxy.start())
    if setup.agent_proxy is not None:
        agent_url = _url(setup.agent_proxy.port or await setup.agent_proxy.start())
    ports = [int(url.rsplit(":", 1)[1]) for url in (worker_url, agent_url)]
    rig.pin(*ports)
    n = len(list(rig.tmp.glob("watch-*"))) + 1  # a fresh scanner folder and settings file per console
    settings = write_settings(rig.tmp / f"run-{n}.toml", tr=tr, volumes=volumes, run=run)
    watch = rig.tmp / f"watch-{n}"
    runs = runs_dir or rig.tmp / "runs"
    before = set(L.worker_runs(setup.worker.data, run_id(run)))
    began = time.monotonic()
    console = setup.console = await rig.start_console(settings, watch, runs, worker=worker_url, subject=agent_url)
    setup.replay = await rig.replay(series, watch, tr=tr, count=volumes)
    task = asyncio.create_task(fault(setup)) if fault is not None else None
    limit = timeout or (volumes * tr + 60)
    try:
        status = await console.wait(limit)
        if task is not None:
            await asyncio.wait_for(task, 30)
    finally:
        if task is not None and not task.done():
            task.cancel()
        for proxy in (setup.worker_proxy, setup.agent_proxy):
            if proxy is not None:
                proxy.flowing.set()
    await setup.replay.wait(30)
    await asyncio.sleep(0.3)  # the last lines on their way to the stimulus program
    dirs = [d for d in L.worker_runs(setup.worker.data, run_id(run)) if d not in before]
    received = [r for r in setup.stimulus.feedback(run_id(run)) if r.t >= began]  # this console's run only
    ledger = L.check(volumes, received, dirs, console.text, worker_restarted=worker_restarted)
    return Outcome(setup, status, console.text, ledger)


async def close(setup: Setup | None) -> None:
    if setup is None:
        return
    await setup.stimulus.close()
    for proxy in (setup.worker_proxy, setup.agent_proxy):
        if proxy is not None:
            await proxy.close()
