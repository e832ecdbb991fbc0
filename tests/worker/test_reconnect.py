"""Cutting the link mid-run: every volume is processed exactly once, every feedback delivered."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import urlsplit

from rtcontrol.worker.client import FeedbackEvent, WorkerClient
from rtcontrol.worker.embedded import local_worker

from .helpers import make_volume, wait_for, write_project
from .proxy import CuttableProxy

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
            on_feedback=feedback.append, on_state=states.append,
            on_subject_message=lambda run, msg: subject.append(msg["text"]),
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
            await wait_for(lambda: len(feedback) >= n, 30, "all feedback")
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


async def test_a_restarted_worker_is_reported_not_hidden(tmp_path: Path) -> None:
    """Two workers with the same certificate behind one address: the second knows no session."""
    from rtcontrol.link.certs import make_certificate, server_context
    from rtcontrol.link.tokens import TokenStore
    from rtcontrol.worker.projects import ProjectCatalog
    from rtcontrol.worker.server import WorkerServer

    cert = make_certificate(["127.0.0.1"], tmp_path / "certs")
    store = TokenStore(tmp_path / "tokens.json")
    token = store.create("console")
    servers = [WorkerServer(tokens=store, ssl_context=server_context(cert.cert, cert.key),
                            catalog=ProjectCatalog(), data_dir=tmp_path / f"runs{i}") for i in range(2)]
    ports = [await s.start("127.0.0.1", 0) for s in servers]
    proxy = CuttableProxy(ports[0])
    errors, feedback, runs = [], [], []
    client = WorkerClient(f"wss://127.0.0.1:{await proxy.start()}", token, expected_fingerprint=cert.fingerprint,
                          backoff=(0.05, 0.2), on_error=lambda m, tb: errors.append(m),
                          on_feedback=feedback.append, on_run_state=lambda r, s, i: runs.append((r, s)))
    try:
        await client.connect()
        await client.start_run("template", {"baseline": 1}, run="a", tr=2.0)
        await client.send_volume(make_volume(0, run="a"))
        await wait_for(lambda: len(feedback) == 1, 10, "first feedback")
        proxy.target_port = ports[1]  # "restart": the same address now reaches a fresh worker
        proxy.cut()
        await wait_for(lambda: ("a", "failed") in runs, 10, "the lost run to be reported")
        assert "the worker restarted and lost run 'a'" in errors[0]
        assert client.run is None
        # a new run on the new worker works, and its events are not mistaken for old ones
        await client.start_run("template", {"baseline": 1}, run="b", tr=2.0)
        await client.send_volume(make_volume(0, run="b"))
        await client.stop_run()
        assert [(e.run, e.index) for e in feedback] == [("a", 0), ("b", 0)]
    finally:
        await client.close()
        await proxy.close()
        for s in servers:
            await s.close()


async def test_requests_made_while_the_link_is_down_complete_after_it_returns(tmp_path: Path) -> None:
    feedback: list[FeedbackEvent] = []
    async with local_worker(in_process=True, data_dir=tmp_path / "runs") as w:
        proxy = CuttableProxy(urlsplit(w.url).port)
        client = WorkerClient(f"wss://127.0.0.1:{await proxy.start()}", w.token, expected_fingerprint=w.fingerprint,
                              backoff=(0.05, 0.2), on_feedback=feedback.append)
        try:
            await client.connect()
            proxy.cut(stay_down=True)
            await wait_for(lambda: client.state == "reconnecting", 5, "the client to notice")
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
