"""The project's design reaches the console's model when the run starts, before any volume (issue 13).

Real parts: the embedded worker the console starts when no address is given (``main.py --worker`` in its
own process, TLS on 127.0.0.1), the real roi_feedback project, the console controller; and a worker
killed with SIGKILL and started again, after which the resumed run's design is taken again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rtcontrol.console import events as ev
from rtcontrol.console import settings as S
from rtcontrol.console.session import ConsoleSession
from rtcontrol.link.certs import make_certificate
from rtcontrol.link.tokens import TokenStore
from rtcontrol.paths import projects_dir
from rtcontrol.project import Block, Design
from rtcontrol.worker.projects import load_project_class
from tests.console.test_worker_restart import WorkerProcess, free_port
from tests.support.wait import wait_until
from tests.support.worker import write_project

pytestmark = pytest.mark.timeout(180)

ROI = {"block_volumes": 10, "expected_volumes": 40, "skip_volumes": 2}


def settings_for(watch: Path, project: str, values: dict[str, Any]) -> S.RunSettings:
    s = S.default_settings().with_values("run", tr=0.5, watch_folder=str(watch))
    return s.with_values("project", name=project, settings=values)


async def test_the_design_is_in_the_model_at_run_start_before_any_volume(tmp_path: Path) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    session = ConsoleSession(settings_for(watch, "roi_feedback", ROI), runs_dir=tmp_path / "runs")
    c = session.controller
    seen: list[Any] = []
    c.events.subscribe(lambda e: seen.append(e) if isinstance(e, (ev.DesignKnown, ev.VolumeArrived)) else None)
    await session.open()
    try:
        assert c.worker is not None and session.embedded.get("worker") is not None  # no address: embedded
        run = await session.start_run()
        cls = load_project_class(projects_dir() / "roi_feedback")
        expected = cls().design({**{d.name: d.default for d in cls.settings}, **ROI})
        assert c.model.design == expected, c.model.design
        assert [(b.condition, b.onset, b.volumes) for b in c.model.design.blocks][:3] == [
            ("baseline", 2, 10), ("feedback", 12, 10), ("baseline", 22, 10)]
        assert c.model.volumes == 0 and seen == [ev.DesignKnown(run, ("baseline", "feedback"), 42)]
        await session.stop_run()
        # a project without a design: none, as before
        s2 = settings_for(watch, "template", {}).next_run()
        await session.start_run(s2)
        assert c.model.design is None and c.model.condition_blocks() == []
        await session.stop_run()
    finally:
        await session.close()


DESIGNED = """
    from rtcontrol.project import Block, Design

    class Designed(Project):
        def design(self, settings):
            return Design(("rest", "task"), (Block("rest", 0, 3), Block("task", 3, 4)))

        def process(self, volume, ctx):
            return Result(feedback=0.5)
"""


async def test_the_design_is_taken_again_from_a_restarted_worker(tmp_path: Path) -> None:
    cert = make_certificate(["127.0.0.1"], tmp_path / "certs")
    tokens = TokenStore(tmp_path / "tokens.json")
    token = tokens.create("console")
    write_project(tmp_path / "projects", "designed", DESIGNED)
    port = free_port()
    first = WorkerProcess(port, cert, tokens.path, tmp_path / "worker-runs", tmp_path / "projects")
    second = WorkerProcess(port, cert, tokens.path, tmp_path / "worker-runs", tmp_path / "projects")
    (tmp_path / "known_hosts").write_text(f"127.0.0.1:{port} {cert.fingerprint}\n")
    watch = tmp_path / "watch"
    watch.mkdir()
    s = settings_for(watch, "designed", {}).with_values("worker", url=f"wss://127.0.0.1:{port}", token=token)
    session = ConsoleSession(s, runs_dir=tmp_path / "runs", known_hosts=tmp_path / "known_hosts")
    c = session.controller
    known: list[ev.DesignKnown] = []
    c.events.subscribe(lambda e: known.append(e) if isinstance(e, ev.DesignKnown) else None)
    want = Design(("rest", "task"), (Block("rest", 0, 3), Block("task", 3, 4)))
    await first.start()
    try:
        await session.open()
        run = await session.start_run()
        assert c.model.design == want and len(known) == 1
        await first.kill()
        await second.start()
        await wait_until(lambda: len(known) == 2, timeout=60, what="the design from the restarted worker")
        assert known[1] == ev.DesignKnown(run, ("rest", "task"), 7) and c.model.design == want
        assert c.model.volumes == 0
        await session.stop_run()
    finally:
        await session.close()
        await first.stop()
        await second.stop()


async def test_a_bad_design_from_the_worker_is_said_and_the_run_goes_on(tmp_path: Path) -> None:
    from tests.console.test_fake_links import _rig

    rig = _rig(tmp_path)
    sent = {"design": {"conditions": ["rest"], "blocks": [{"condition": "task", "onset": 0, "volumes": 3}]}}

    async def start_run(run: str, project: str, settings: dict[str, Any], tr: float) -> dict[str, Any]:
        return sent

    rig.worker.start_run = start_run  # type: ignore[method-assign]
    said: list[str] = []
    rig.controller.events.subscribe(lambda e: said.append(e.text) if isinstance(e, ev.LogMessage) else None)
    await rig.controller.start_run()
    assert rig.controller.model.design is None and rig.controller.state == ev.RUNNING
    assert any("design from the worker is not usable" in t and "task" in t for t in said), said
    await rig.controller.stop_run()
