"""Cutting the link mid-run: every volume is processed exactly once, every feedback delivered."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import urlsplit

from rtcontrol.link.events import Problem, RunChanged, StateChanged, SubjectMessage, route
from rtcontrol.scanner.volume import Volume
from rtcontrol.worker.client import FeedbackEvent, WorkerClient
from rtcontrol.worker.embedded import local_worker
from tests.support.proxy import CuttableProxy
from tests.support.wait import wait_until
from tests.support.worker import make_volume, write_project

SLOW = """
    import time
    class Slow(Project):
        def process(self, volume, ctx):
            time.sleep(0.04)  # feedback keeps coming while the link is down
            ctx.send_to_subject(f"volume {volume.index}")
            return Result(feedback=volume.index / 100.0, metrics={"i": volume.index})
"""


async def test_link_cut_mid_run_loses_nothing(tmp_path: Path) -> None:
    write_project(tmp_path / "projects", "slow", SLOW)
    feedback: list[FeedbackEvent] = []
    subject: list[str] = []
    states: list[str] = []
    n = 40
    async with local_worker(projects=[tmp_path / "projects"], in_process=True, data_dir=tmp_path / "runs") as w:
        proxy = CuttableProxy(urlsplit(w.url).port)
        port = await proxy.start()
        client = WorkerClient(
            f"wss://127.0.0.1:{port}", w.token, expected_fingerprint=w.fingerprint, backoff=(0.05, 0.4),
            on_event=route({FeedbackEvent: feedback.append, StateChanged: lambda e: states.append(e.state),
                            SubjectMessage: lambda e: subject.append(e.message["text"])}),
        )
        await client.connect()
        try:
            loop = asyncio.get_running_loop()
            t_start = loop.time()
            await client.start_run("slow", {}, run="cut", tr=0.02)
            for i in range(n):
                if i == 5:
                    proxy.muted = True  # volumes 5..9 reach the worker, their acks and feedback are lost
                if i == 10:
                    await asyncio.sleep(0.3)  # let the worker process them
                    proxy.cut()  # drop; the client reconnects at once and resends 5..9
                if i == 20:
                    proxy.cut(stay_down=True)  # a longer outage: volumes and feedback pile up
                if i == 30:
                    proxy.restore()
                await client.send_volume(make_volume(i, run="cut"))
                await asyncio.sleep(0.02)
            await wait_until(lambda: len(feedback) >= n, 30, "all feedback")
            await client.stop_run()
            elapsed = loop.time() - t_start
        finally:
            await client.close()
            await proxy.close()
    assert proxy.cuts >= 2 and client.reconnects >= 2
    assert client.resent_volumes >= 5  # unacknowledged volumes went out again...
    assert "reconnecting" in states
    # delivered exactly once each, in order
    assert [e.index for e in feedback] == list(range(n))
    assert [e.feedback for e in feedback] == [i / 100.0 for i in range(n)]
    assert subject == [f"volume {i}" for i in range(n)]
    # processed exactly once each on the worker
    (run_dir,) = (tmp_path / "runs").iterdir()
    done = [json.loads(line)["index"] for line in (run_dir / "feedback.jsonl").read_text().splitlines()]
    assert done == list(range(n))  # ...and were not processed twice
    assert elapsed < 20


COUNTING = """
    import time
    class Counting(Project):
        def start_run(self, ctx):
            time.sleep(float(ctx.settings.get("start_delay", 0)))
            ctx.state["seen"] = []

        def process(self, volume, ctx):
            seen = ctx.state["seen"]
            seen.append(volume.index)  # i + 1 only if every earlier volume came once, in order
            return Result(feedback=float(len(seen)) if seen == list(range(volume.index + 1)) else -1.0)

    Counting.settings = [Setting("start_delay", 0.0)]
"""


class TwoWorkers:
    """Two workers with the same certificate and token behind one address: "restarting" the worker is pointing
    the proxy at the second one, which knows no session."""

    def __init__(self, tmp_path: Path, projects: list[list[Path]]) -> None:
        from rtcontrol.link.certs import make_certificate, server_context
        from rtcontrol.link.tokens import TokenStore
        from rtcontrol.worker.projects import ProjectCatalog
        from rtcontrol.worker.server import WorkerServer

        self.cert = make_certificate(["127.0.0.1"], tmp_path / "certs")
        store = TokenStore(tmp_path / "tokens.json")
        self.token = store.create("console")
        self.data = [tmp_path / f"runs{i}" for i in range(2)]
        self.servers = [WorkerServer(tokens=store, ssl_context=server_context(self.cert.cert, self.cert.key),
                                     catalog=ProjectCatalog(projects[i]), data_dir=self.data[i]) for i in range(2)]
        self.proxy: CuttableProxy | None = None

    async def start(self) -> str:
        ports = [await s.start("127.0.0.1", 0) for s in self.servers]
        self.ports = ports
        self.proxy = CuttableProxy(ports[0])
        return f"wss://127.0.0.1:{await self.proxy.start()}"

    def restart(self) -> None:
        assert self.proxy is not None
        self.proxy.target_port = self.ports[1]
        self.proxy.cut()

    async def close(self) -> None:
        if self.proxy is not None:
            await self.proxy.close()
        for s in self.servers:
            await s.close()


def processed(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["index"], r["feedback"]) for r in map(json.loads, (run_dir / "feedback.jsonl").read_text().splitlines())]


async def test_a_restarted_worker_gets_the_run_again_with_every_volume_once_in_order(tmp_path: Path) -> None:
    write_project(tmp_path / "projects", "counting", COUNTING)
    workers = TwoWorkers(tmp_path, [[tmp_path / "projects"]] * 2)
    kept: dict[int, Volume] = {}  # the console's record of what it sent

    def replay(run: str, indices: list[int]) -> dict[int, Volume]:
        assert run == "a"
        return {i: kept[i] for i in indices if i in kept}

    feedback: list[FeedbackEvent] = []
    runs: list[tuple[str, str, dict]] = []
    client = WorkerClient(await workers.start(), workers.token, expected_fingerprint=workers.cert.fingerprint,
                          backoff=(0.05, 0.2), replay_source=replay,
                          on_event=route({FeedbackEvent: feedback.append,
                                          RunChanged: lambda e: runs.append((e.run, e.state, e.info))}))
    try:
        await client.connect()
        first = await client.start_run("counting", {}, run="a", tr=2.0)
        for i in range(3):
            kept[i] = make_volume(i, run="a")
            await client.send_volume(kept[i])
        await wait_until(lambda: len(feedback) == 3, 15, "the first worker's feedback")
        workers.restart()
        for i in range(3, 5):  # the scanner goes on while the console finds the new worker
            kept[i] = make_volume(i, run="a")
            await client.send_volume(kept[i])
        await wait_until(lambda: len(feedback) == 8, 15, "the restarted run's feedback")
        await client.stop_run()
    finally:
        await client.close()
        await workers.close()
    assert [(r, s) for r, s, _ in runs] == [("a", "restarting"), ("a", "restarted"), ("a", "ended")]
    restarted = runs[1][2]
    assert restarted["replayed"] == [0, 1, 2, 3, 4] or restarted["replayed"] == [0, 1, 2]  # 3, 4 maybe sent live
    assert restarted["lost"] == [] and restarted["previous_data_dir"] == first["data_dir"]
    assert client.run_restarts == 1
    # the lost worker's feedback, then the new worker's for every volume: each once, in order, state rebuilt
    expected = [(i, i + 1.0) for i in range(3)] + [(i, i + 1.0) for i in range(5)]
    assert [(e.index, e.feedback) for e in feedback] == expected
    (new_dir,) = workers.data[1].iterdir()
    assert new_dir.name.endswith("_restart1_a") and restarted["data_dir"] == str(new_dir)
    assert processed(new_dir) == [(i, i + 1.0) for i in range(5)]
    note = json.loads((new_dir / "restart.json").read_text())
    assert note["restart"] == 1 and note["replaces"] == Path(first["data_dir"]).name
    assert note["replaces_found_here"] is False  # another data folder: the old one is named, not marked


async def test_without_a_record_the_volumes_the_lost_worker_had_are_named(tmp_path: Path) -> None:
    write_project(tmp_path / "projects", "counting", COUNTING)
    workers = TwoWorkers(tmp_path, [[tmp_path / "projects"]] * 2)
    feedback: list[FeedbackEvent] = []
    runs: list[tuple[str, str, dict]] = []
    client = WorkerClient(await workers.start(), workers.token, expected_fingerprint=workers.cert.fingerprint,
                          backoff=(0.05, 0.2),
                          on_event=route({FeedbackEvent: feedback.append,
                                          RunChanged: lambda e: runs.append((e.run, e.state, e.info))}))
    try:
        await client.connect()
        await client.start_run("counting", {}, run="a", tr=2.0)
        await client.send_volume(make_volume(0, run="a"))
        await wait_until(lambda: len(feedback) == 1, 15, "first feedback")
        workers.restart()
        await wait_until(lambda: any(s == "restarted" for _, s, _ in runs), 15, "the run to start again")
        await client.send_volume(make_volume(1, run="a"))
        await client.stop_run()
    finally:
        await client.close()
        await workers.close()
    info = runs[1][2]
    assert info["lost"] == [0] and "no record" in info["why"] and info["replayed"] == []
    # the run goes on: volume 1 is processed, by a project that never saw volume 0 (hence -1)
    assert [(e.index, e.feedback) for e in feedback] == [(0, 1.0), (1, -1.0)]


async def test_a_run_the_restarted_worker_cannot_start_is_reported_failed(tmp_path: Path) -> None:
    write_project(tmp_path / "projects", "counting", COUNTING)
    workers = TwoWorkers(tmp_path, [[tmp_path / "projects"], []])  # the new worker lacks the project
    errors: list[str] = []
    runs: list[tuple[str, str]] = []
    feedback: list[FeedbackEvent] = []
    client = WorkerClient(await workers.start(), workers.token, expected_fingerprint=workers.cert.fingerprint,
                          backoff=(0.05, 0.2),
                          on_event=route({Problem: lambda e: errors.append(e.message), FeedbackEvent: feedback.append,
                                          RunChanged: lambda e: runs.append((e.run, e.state))}))
    try:
        await client.connect()
        await client.start_run("counting", {}, run="a", tr=2.0)
        await client.send_volume(make_volume(0, run="a"))
        await wait_until(lambda: len(feedback) == 1, 15, "first feedback")
        workers.restart()
        await wait_until(lambda: ("a", "failed") in runs, 15, "the lost run to be reported")
        assert "the worker restarted and could not start run 'a' again: " in errors[-1]
        assert "counting" in errors[-1] and "start the run again" in errors[-1]
        assert client.run is None
        # a new run on the new worker works, and its events are not mistaken for old ones
        await client.start_run("template", {"baseline": 1}, run="b", tr=2.0)
        await client.send_volume(make_volume(0, run="b"))
        await client.stop_run()
        assert [(e.run, e.index) for e in feedback] == [("a", 0), ("b", 0)]
    finally:
        await client.close()
        await workers.close()


async def test_a_drop_while_the_run_starts_again_starts_it_once(tmp_path: Path) -> None:
    write_project(tmp_path / "projects", "counting", COUNTING)
    workers = TwoWorkers(tmp_path, [[tmp_path / "projects"]] * 2)
    kept = {i: make_volume(i, run="a") for i in range(3)}
    feedback: list[FeedbackEvent] = []
    runs: list[str] = []
    client = WorkerClient(await workers.start(), workers.token, expected_fingerprint=workers.cert.fingerprint,
                          backoff=(0.05, 0.2),
                          on_event=route({FeedbackEvent: feedback.append, RunChanged: lambda e: runs.append(e.state)}),
                          replay_source=lambda run, indices: {i: kept[i] for i in indices})
    try:
        await client.connect()
        await client.start_run("counting", {"start_delay": 1.0}, run="a", tr=2.0)
        for i in range(3):
            await client.send_volume(kept[i])
        await wait_until(lambda: len(feedback) == 3, 15, "the first worker's feedback")
        workers.restart()
        await wait_until(lambda: "restarting" in runs, 15, "the new worker to be found")
        await asyncio.sleep(0.3)  # the project is starting (1 s): drop the link under it
        assert "restarted" not in runs
        workers.proxy.cut()  # type: ignore[union-attr]
        await wait_until(lambda: len(feedback) == 6, 20, "the restarted run's feedback")
        await client.stop_run()
    finally:
        await client.close()
        await workers.close()
    assert runs == ["restarting", "restarted", "ended"]
    (new_dir,) = workers.data[1].iterdir()  # started once, not once per connection
    assert processed(new_dir) == [(i, i + 1.0) for i in range(3)]
    assert [e.feedback for e in feedback[3:]] == [1.0, 2.0, 3.0]


async def test_requests_made_while_the_link_is_down_complete_after_it_returns(tmp_path: Path) -> None:
    feedback: list[FeedbackEvent] = []
    async with local_worker(in_process=True, data_dir=tmp_path / "runs") as w:
        proxy = CuttableProxy(urlsplit(w.url).port)
        client = WorkerClient(f"wss://127.0.0.1:{await proxy.start()}", w.token, expected_fingerprint=w.fingerprint,
                              backoff=(0.05, 0.2), on_event=route({FeedbackEvent: feedback.append}))
        try:
            await client.connect()
            proxy.cut(stay_down=True)
            await wait_until(lambda: client.state == "reconnecting", 5, "the client to notice")
            start = asyncio.create_task(client.start_run("template", {"baseline": 1}, run="late", tr=2.0))
            await asyncio.sleep(0.3)
            assert not start.done()
            proxy.restore()
            result = await asyncio.wait_for(start, 10)
            assert result["run"] == "late"
            await client.send_volume(make_volume(0, run="late"))
            await client.stop_run()
        finally:
            await client.close()
            await proxy.close()
        assert len(list((tmp_path / "runs").iterdir())) == 1  # started once, not once per attempt
    assert [e.index for e in feedback] == [0]
