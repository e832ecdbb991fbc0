"""The worker end to end over real TLS on 127.0.0.1: projects, runs, failures, saving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtcontrol.worker.client import WorkerClient, WorkerError
from rtcontrol.worker.embedded import local_worker
from tests.support.wait import wait_until
from tests.support.worker import Recorder, make_volume, write_project

CRASHY = {
    "raiser": """
        class Raiser(Project):
            description = "raises on volume 2"
            def process(self, volume, ctx):
                if volume.index == 2:
                    raise RuntimeError("bad things in volume two")
                return 0.5
    """,
    "crasher": """
        import os
        class Crasher(Project):
            def process(self, volume, ctx):
                if volume.index == 1:
                    os._exit(7)
                return 0.1
    """,
    "looper": """
        class Looper(Project):
            def process(self, volume, ctx):
                while volume.index == 1:
                    pass
                return 0.2
    """,
    "broken_import": """
        import this_module_does_not_exist
        class Broken(Project):
            def process(self, volume, ctx):
                return 0
    """,
}


@pytest.fixture
def projects(tmp_path: Path) -> Path:
    root = tmp_path / "projects"
    for name, body in CRASHY.items():
        write_project(root, name, body)
    return root


async def test_template_run_saves_settings_feedback_and_log(tmp_path: Path, projects: Path) -> None:
    rec = Recorder()
    async with local_worker(projects=[projects], in_process=True, data_dir=tmp_path / "runs") as w:
        async with WorkerClient(w.url, w.token, expected_fingerprint=w.fingerprint, **rec.kwargs()) as client:
            listed = {p["name"]: p for p in await client.list_projects()}
            assert "template" in listed and "raiser" in listed
            assert listed["raiser"]["description"] == "raises on volume 2"
            assert "this_module_does_not_exist" in listed["broken_import"]["error"]
            settings = {s["name"]: s for s in await client.project_settings("template")}
            assert settings["baseline"]["default"] == 5 and settings["baseline"]["type"] == "int"
            with pytest.raises(WorkerError, match="below the minimum"):
                await client.start_run("template", {"baseline": 0}, run="bad", tr=2.0)
            with pytest.raises(WorkerError, match="no project named 'nope'"):
                await client.start_run("nope", {}, run="bad", tr=2.0)
            started = await client.start_run("template", {"baseline": 3}, run="run-1", tr=2.0)
            assert started["settings"] == {"baseline": 3, "scale": 2.0}
            for i in range(8):
                await client.send_volume(make_volume(i, level=1000.0 if i < 5 else 1010.0))
            stopped = await client.stop_run()
            assert stopped["volumes"] == 8
            assert client.rtt is not None and client.rtt < 0.5
            assert abs(client.clock_offset) < 0.05  # same host, same monotonic clock
    assert [e.index for e in rec.feedback] == list(range(8))
    assert [e.feedback for e in rec.feedback[:3]] == [None, None, None]
    assert all(0.5 < e.feedback <= 1.0 for e in rec.feedback[5:])  # +1 % over baseline
    tl = rec.feedback[-1].timeline
    for a, b in [("parsed", "sent"), ("sent", "worker_received"), ("worker_received", "result_ready"),
                 ("result_ready", "feedback_received")]:
        assert tl.between(a, b) is not None and tl.between(a, b) >= -0.005, (a, b, tl.stamps)
    assert ("run-1", "ended") in rec.runs and rec.errors == []
    assert any("baseline of 3 volumes" in m for m in rec.logs)
    bad_dir, run_dir = sorted((tmp_path / "runs").iterdir(), key=lambda p: p.name.endswith("run-1"))
    assert "below the minimum" in (bad_dir / "project.log").read_text()  # a failed start is recorded too
    assert json.loads((run_dir / "settings.json").read_text())["settings"] == {"baseline": 3, "scale": 2.0}
    lines = [json.loads(x) for x in (run_dir / "feedback.jsonl").read_text().splitlines()]
    assert [r["index"] for r in lines] == list(range(8))
    assert "worker_received" in lines[0]["worker_timeline"] and "sent" in lines[0]["timeline"]
    assert "run over" in (run_dir / "project.log").read_text()


@pytest.mark.parametrize(
    "project, needle, last_ok",
    [
        ("raiser", "bad things in volume two", 1),
        ("crasher", "exited unexpectedly (exit code 7)", 0),
        ("looper", "took longer than 1.5 s on volume 1", 0),
    ],
)
async def test_failing_project_stops_only_its_run(projects: Path, project: str, needle: str, last_ok: int) -> None:
    rec = Recorder()
    async with local_worker(projects=[projects], in_process=True, volume_timeout=1.5) as w:
        async with WorkerClient(w.url, w.token, expected_fingerprint=w.fingerprint, **rec.kwargs()) as client:
            await client.start_run(project, {}, run="r1", tr=2.0)
            for i in range(4):
                await client.send_volume(make_volume(i, run="r1"))
            await wait_until(lambda: ("r1", "failed") in rec.runs, 15, "the run to fail")
            assert [e.index for e in rec.feedback] == list(range(last_ok + 1))
            message, tb = rec.errors[0]
            assert needle in message
            if project == "raiser":
                assert "Traceback" in tb and "RuntimeError: bad things in volume two" in tb and "project.py" in tb
            # the worker is still up: the same session starts a healthy run
            await client.stop_run()
            await client.start_run("template", {"baseline": 1}, run="r2", tr=2.0)
            await client.send_volume(make_volume(0, run="r2"))
            await client.send_volume(make_volume(1, run="r2"))
            await client.stop_run()
            assert [e.index for e in rec.feedback if e.run == "r2"] == [0, 1]


async def test_broken_project_reports_its_import_error(projects: Path) -> None:
    async with local_worker(projects=[projects], in_process=True) as w:
        async with WorkerClient(w.url, w.token, expected_fingerprint=w.fingerprint) as client:
            with pytest.raises(WorkerError) as info:
                await client.start_run("broken_import", {}, run="r", tr=1.0)
            assert "this_module_does_not_exist" in str(info.value)
            assert "Traceback" in info.value.traceback


async def test_several_consoles_each_have_their_own_session(projects: Path) -> None:
    recs = [Recorder(), Recorder()]
    async with local_worker(projects=[projects], in_process=True) as w:
        clients = [WorkerClient(w.url, w.token, expected_fingerprint=w.fingerprint, **r.kwargs()) for r in recs]
        for c in clients:
            await c.connect()
        try:
            await clients[0].start_run("template", {"baseline": 1}, run="same-name", tr=2.0)
            await clients[1].start_run("template", {"baseline": 2}, run="same-name", tr=2.0)
            for i in range(3):
                for c in clients:
                    await c.send_volume(make_volume(i, run="same-name"))
            for c in clients:
                await c.stop_run()
        finally:
            for c in clients:
                await c.close()
    for r in recs:
        assert [e.index for e in r.feedback] == [0, 1, 2]
    assert recs[0].feedback[1].feedback is not None and recs[1].feedback[1].feedback is None


async def test_volume_without_a_run_is_refused_clearly(projects: Path) -> None:
    async with local_worker(projects=[projects], in_process=True) as w:
        async with WorkerClient(w.url, w.token, expected_fingerprint=w.fingerprint) as client:
            with pytest.raises(WorkerError, match="start a run"):
                await client.send_volume(make_volume(0))


async def test_oversized_volume_is_refused_and_the_link_survives(projects: Path) -> None:
    from rtcontrol.worker.client import VolumeTooLarge

    rec = Recorder()
    async with local_worker(projects=[projects], in_process=True, max_size=64 * 1024) as w:
        async with WorkerClient(w.url, w.token, expected_fingerprint=w.fingerprint, **rec.kwargs()) as client:
            await client.start_run("template", {"baseline": 1}, run="big", tr=2.0)
            await client.send_volume(make_volume(0, run="big"))
            with pytest.raises(VolumeTooLarge, match=r"volume 1 is \d+ bytes, over the worker's limit of 65536"):
                await client.send_volume(make_volume(1, shape=(64, 64, 32), run="big"))
            await client.send_volume(make_volume(2, run="big"))
            await client.stop_run()
            assert client.state == "connected" and client.reconnects == 0
    assert [e.index for e in rec.feedback] == [0, 2]


async def test_oversized_feedback_is_replaced_by_a_clear_log(tmp_path: Path) -> None:
    write_project(tmp_path / "p", "huge", """
        class Huge(Project):
            def process(self, volume, ctx):
                return {"blob": "x" * (200 * 1024)} if volume.index == 1 else 0.5
    """)
    rec = Recorder()
    async with local_worker(projects=[tmp_path / "p"], in_process=True, max_size=128 * 1024) as w:
        async with WorkerClient(w.url, w.token, expected_fingerprint=w.fingerprint, **rec.kwargs()) as client:
            await client.start_run("huge", {}, run="h", tr=2.0)
            for i in range(3):
                await client.send_volume(make_volume(i, run="h"))
            await client.stop_run()
            assert client.reconnects == 0
    assert [e.index for e in rec.feedback] == [0, 2]
    assert any("feedback of volume 1 dropped" in m and "over the" in m for m in rec.logs)


async def test_closing_the_console_ends_its_run(tmp_path: Path, projects: Path) -> None:
    async with local_worker(projects=[projects], in_process=True, data_dir=tmp_path / "runs") as w:
        client = WorkerClient(w.url, w.token, expected_fingerprint=w.fingerprint)
        await client.connect()
        await client.start_run("template", {"baseline": 1}, run="left", tr=2.0)
        await client.send_volume(make_volume(0, run="left"))
        await client.close()  # without stop_run
        (run_dir,) = (tmp_path / "runs").iterdir()
        await wait_until(lambda: "run ended after 1 volumes" in (run_dir / "project.log").read_text(), 15, "end_run")
    assert client.state == "closed"


async def test_malformed_messages_get_clear_errors_and_the_link_stays(projects: Path) -> None:
    from rtcontrol.link.codec import decode_message, encode_message
    from rtcontrol.link.transport import connect

    async with local_worker(projects=[projects], in_process=True) as w:
        link = await connect(w.url, token=w.token, expected_fingerprint=w.fingerprint, hello={"session": "x"})
        conn = link.conn
        await conn.send('{"type": "ping", "v": 7}')
        assert "protocol version 7" in decode_message(await conn.recv())["message"]
        await conn.send(encode_message("event_ack", upto="lots"))
        assert decode_message(await conn.recv())["code"] == "bad_message"
        await conn.send(b"\x05\x00\x00\x00{oops")
        ack = decode_message(await conn.recv())
        assert ack["type"] == "ack" and "bad volume frame" in ack["error"]
        await conn.send(encode_message("request", id=1, op="start_run", args={}))
        reply = decode_message(await conn.recv())
        assert reply["ok"] is False and "lacks the argument 'project'" in reply["error"]
        await conn.send(encode_message("ping", t0=1.0))
        assert decode_message(await conn.recv())["type"] == "pong"
        await conn.close()
