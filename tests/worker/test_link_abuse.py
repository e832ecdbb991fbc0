"""The worker's link under abuse from its own address: bad tokens during an outage, unauthenticated
floods, deeply nested JSON. Real worker, real TLS, 127.0.0.1; every loop bounded in count and time."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import websockets

from rtcontrol.link import transport
from rtcontrol.link.codec import decode_message, encode_message
from rtcontrol.link.events import LogLine, Problem, StateChanged, route
from rtcontrol.worker.client import FeedbackEvent, WorkerClient
from rtcontrol.worker.embedded import local_worker
from tests.support.link_abuse import bad_tokens, flood_one, insecure_context, rss
from tests.support.proxy import CuttableProxy
from tests.support.wait import wait_until
from tests.support.worker import make_volume, write_project

ECHO = """
    class Echo(Project):
        def process(self, volume, ctx):
            return Result(feedback=volume.index / 100.0)
"""


async def test_bad_tokens_from_the_same_address_during_an_outage_do_not_end_reconnection(tmp_path: Path) -> None:
    write_project(tmp_path / "projects", "echo", ECHO)
    feedback: list[FeedbackEvent] = []
    states: list[str] = []
    errors: list[str] = []
    n = 24
    async with local_worker(projects=[tmp_path / "projects"], in_process=True, data_dir=tmp_path / "runs") as w:
        proxy = CuttableProxy(urlsplit(w.url).port)
        port = await proxy.start()
        client = WorkerClient(f"wss://127.0.0.1:{port}", w.token, expected_fingerprint=w.fingerprint,
                              backoff=(0.05, 0.3), on_event=route({FeedbackEvent: feedback.append,
                                                StateChanged: lambda e: states.append(e.state),
                                                Problem: lambda e: errors.append(e.message)}))
        await client.connect()
        try:
            await client.start_run("echo", {}, run="lockout", tr=0.05)
            for i in range(n):
                if i == 8:
                    await wait_until(lambda: len(feedback) == 8, 20, "feedback before the outage")
                    proxy.cut(stay_down=True)
                    # while the link is down, another program on this address keeps trying wrong tokens
                    await bad_tokens(w.url, w.fingerprint, 5)  # the 4th and 5th lock the address out
                    proxy.restore()
                await client.send_volume(make_volume(i, run="lockout"))
                await asyncio.sleep(0.02)
            await wait_until(lambda: len(feedback) >= n, 30, "feedback after the lockout")
            # the address was still locked out when the console got back in: a wrong token is still held to it
            (after,) = await bad_tokens(w.url, w.fingerprint, 1)
            assert "locked out for" in after and "a correct token still gets in" in after
            await client.stop_run()
        finally:
            await client.close()
            await proxy.close()
    assert client.reconnects >= 1 and "failed" not in states, (states, errors)
    assert [e.index for e in feedback] == list(range(n))
    assert not errors


async def test_a_busy_worker_answers_429_with_retry_after_and_the_console_waits_and_retries(tmp_path: Path,
                                                                                          caplog) -> None:
    """Unauthenticated connections fill this address's slots: the console waits, says so once, gets in."""
    logs: list[tuple] = []
    async with local_worker(in_process=True, data_dir=tmp_path / "runs") as w:
        port = urlsplit(w.url).port
        idle = [await websockets.connect(f"wss://127.0.0.1:{port}", ssl=insecure_context(), proxy=None, open_timeout=5)
                for _ in range(transport.PreAuthLimits().per_address)]
        client = WorkerClient(w.url, w.token, expected_fingerprint=w.fingerprint,
                              on_event=route({LogLine: lambda e: logs.append((e.run, e.level, e.message))}))

        async def free_slots_later() -> None:
            await asyncio.sleep(2.5)  # a little over one Retry-After: the console is refused at least twice
            for c in idle:
                await c.close()

        freer = asyncio.create_task(free_slots_later())
        try:
            with caplog.at_level(logging.WARNING):
                await asyncio.wait_for(client.connect(), 30)
            assert client.state == "connected"
            assert (await client.status())["run"] is None
        finally:
            await freer
            await client.close()
    notices = [args for args in logs if "refused for now" in args[2]]
    assert len(notices) == 1, logs  # said once, not at every attempt
    assert notices[0][1] == "WARNING" and "have not authenticated yet" in notices[0][2]
    assert "retrying every 2 s" in notices[0][2]


async def test_a_flood_of_unauthenticated_large_frames_is_closed_early_and_memory_stays_bounded(tmp_path: Path) -> None:
    """40 connections each announcing a 16 MiB frame, from another loopback address, while the console works."""
    write_project(tmp_path / "projects", "echo", ECHO)
    feedback: list[FeedbackEvent] = []
    async with local_worker(projects=[tmp_path / "projects"], data_dir=tmp_path / "runs") as w:
        assert w.pid is not None  # a real worker process: its RSS is what we measure
        port = urlsplit(w.url).port
        client = WorkerClient(w.url, w.token, expected_fingerprint=w.fingerprint,
                              on_event=route({FeedbackEvent: feedback.append}))
        await client.connect()
        try:
            await client.start_run("echo", {}, run="flood", tr=0.05)
            await asyncio.sleep(0.5)
            before = rss(w.pid)
            flood = [asyncio.create_task(flood_one(port, "127.0.0.2", 16 << 20, 16 << 20)) for _ in range(40)]
            peak = before
            for i in range(20):  # the console keeps working during the flood
                await client.send_volume(make_volume(i, run="flood"))
                peak = max(peak, rss(w.pid))
                await asyncio.sleep(0.05)
                if i == 5:  # and a second console connects in the middle of it
                    other = WorkerClient(w.url, w.token, expected_fingerprint=w.fingerprint)
                    await asyncio.wait_for(other.connect(), 20)
                    assert (await other.status())["run"] is None
                    await other.close()
            outcomes = await asyncio.wait_for(asyncio.gather(*flood), 60)
            peak = max(peak, rss(w.pid))
            await wait_until(lambda: len(feedback) >= 20, 30, "feedback during the flood")
            await client.stop_run()
        finally:
            await client.close()
    assert "sent all" not in outcomes, outcomes  # every flood connection was closed or refused early
    assert [e.index for e in feedback] == list(range(20))
    # 40 x 16 MiB would be 640 MiB buffered; a few TLS buffers are all that may remain
    assert peak - before < 64 << 20, f"worker RSS grew by {(peak - before) >> 20} MiB during the flood"


async def test_deeply_nested_json_from_the_console_is_a_bad_frame_and_the_link_stays_up(tmp_path: Path, caplog) -> None:
    async with local_worker(in_process=True, data_dir=tmp_path / "runs") as w:
        link = await transport.connect(w.url, token=w.token, expected_fingerprint=w.fingerprint,
                                       hello={"role": "console"})
        try:
            await link.conn.send("[" * 100_000)
            error = decode_message(await asyncio.wait_for(link.conn.recv(), 5))
            assert error["type"] == "error" and error["code"] == "bad_frame"
            assert "nested deeper than" in error["message"]
            await link.conn.send('{"type":"request","v":1,"id":1,"op":"status","args":' + "[" * 5000 + "]" * 5000 + "}")
            error = decode_message(await asyncio.wait_for(link.conn.recv(), 5))
            assert error["code"] == "bad_frame" and "nested deeper than" in error["message"]
            await link.conn.send(encode_message("request", id=2, op="status", args={}))  # still answered
            reply = decode_message(await asyncio.wait_for(link.conn.recv(), 5))
            assert reply["type"] == "reply" and reply["ok"] and reply["id"] == 2
        finally:
            await link.conn.close()
    assert "RecursionError" not in caplog.text and "Traceback" not in caplog.text


async def test_a_wrong_token_of_the_console_itself_stays_fatal_during_a_lockout(tmp_path: Path) -> None:
    """The lockout delays a wrong token's refusal; the console must still hear it, not retry forever."""
    errors: list[str] = []
    async with local_worker(in_process=True, data_dir=tmp_path / "runs") as w:
        await bad_tokens(w.url, w.fingerprint, 5)  # the address is locked out now
        client = WorkerClient(w.url, "rtc_a-revoked-token", expected_fingerprint=w.fingerprint,
                              on_event=route({Problem: lambda e: errors.append(e.message)}))
        try:
            with pytest.raises(transport.AuthError, match="refused the token"):
                await asyncio.wait_for(client.connect(), 30)
            assert client.state == "failed"
        finally:
            await client.close()


DEEP_FEEDBACK = """
    class Deep(Project):
        def process(self, volume, ctx):
            if volume.index == 1:
                value = 0.0
                for _ in range(200):  # deeper than the link accepts, shallow enough for Python's json
                    value = [value]
                return Result(feedback=value)
            return Result(feedback=volume.index / 100.0)
"""


async def test_feedback_nested_too_deep_is_dropped_with_a_message_and_later_feedback_still_arrives(tmp_path) -> None:
    """The worker never sends what the console must refuse: that event would block every later one."""
    write_project(tmp_path / "projects", "deep", DEEP_FEEDBACK)
    feedback: list[FeedbackEvent] = []
    logs: list[tuple] = []
    async with local_worker(projects=[tmp_path / "projects"], in_process=True, data_dir=tmp_path / "runs") as w:
        on_event = route({FeedbackEvent: feedback.append,
                          LogLine: lambda e: logs.append((e.run, e.level, e.message))})
        client = WorkerClient(w.url, w.token, expected_fingerprint=w.fingerprint, on_event=on_event)
        await client.connect()
        try:
            await client.start_run("deep", {}, run="deep", tr=0.05)
            for i in range(4):
                await client.send_volume(make_volume(i, run="deep"))
            await wait_until(lambda: len(feedback) >= 3, 20, "the feedback after the dropped one")
            await client.stop_run()
        finally:
            await client.close()
    assert [e.index for e in feedback] == [0, 2, 3]
    dropped = [message for _run, level, message in logs if level == "ERROR"]
    assert dropped and "feedback of volume 1 dropped" in dropped[0] and "nested deeper than" in dropped[0]
