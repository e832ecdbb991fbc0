"""The subject agent's links under abuse: bad tokens from the console's address during an outage, a busy
agent, unauthenticated floods, deeply nested JSON on the console link and from local consumers.
Real agent, real TLS, 127.0.0.1; every loop bounded in count and time."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import websockets

from rtcontrol.link import transport
from rtcontrol.link.certs import make_certificate
from rtcontrol.link.tokens import TokenStore
from rtcontrol.subject import protocol as P
from rtcontrol.subject.link import SubjectClient
from rtcontrol.subject.secret import read_secret
from tests.support.link_abuse import bad_tokens, flood_one, insecure_context, rss
from tests.support.proxy import CuttableProxy
from tests.support.subject import LineConsumer, Recorder
from tests.support.wait import wait_until

MAIN = Path(__file__).resolve().parents[2] / "main.py"
#: Deeper than Python's recursion limit, shorter than the agent's 64 KiB message limit.
DEEP = "[" * 50_000


async def test_bad_tokens_from_the_same_address_during_an_outage_do_not_end_reconnection(agent_info) -> None:
    proxy = CuttableProxy(int(agent_info.url.rsplit(":", 1)[1]))
    port = await proxy.start()
    rec = Recorder()
    client = SubjectClient(f"wss://127.0.0.1:{port}", token=agent_info.token,
                           expected_fingerprint=agent_info.fingerprint, backoff=(0.05, 0.3), **rec.kw())
    consumer = await LineConsumer.open(agent_info.tcp_port)
    try:
        await client.connect(timeout=10)
        await client.start_run({"run": "r"})
        client.send_feedback("r", 0, 0.0)
        await wait_until(lambda: not client.unacked, what="the first ack")
        proxy.cut(stay_down=True)
        await wait_until(lambda: not client.connected, what="the link to drop")
        await bad_tokens(agent_info.url, agent_info.fingerprint, 5)  # the 4th and 5th lock the address out
        for i in range(1, 4):
            client.send_feedback("r", i, i / 10)  # kept until the link is back
        proxy.restore()
        await wait_until(lambda: not client.unacked, timeout=15, what="feedback after the lockout")
        client.send_feedback("r", 4, 0.4)
        got = []
        while len(got) < 5:
            msg = await consumer.next()
            if msg["type"] == "feedback":
                got.append(msg["index"])
        assert got == [0, 1, 2, 3, 4]
        (after,) = await bad_tokens(agent_info.url, agent_info.fingerprint, 1)
        assert "locked out for" in after  # the address was still locked out when the console got in
        assert "failed" not in [s["link"] for s in rec.states] and client.connections == 2
    finally:
        await client.close()
        await proxy.close()
        consumer.close()


async def test_a_busy_agent_is_waited_for_not_given_up(agent_info) -> None:
    port = int(agent_info.url.rsplit(":", 1)[1])
    idle = [await websockets.connect(f"wss://127.0.0.1:{port}", ssl=insecure_context(), proxy=None, open_timeout=5)
            for _ in range(transport.PreAuthLimits().per_address)]
    rec = Recorder()
    client = SubjectClient(agent_info.url, token=agent_info.token, expected_fingerprint=agent_info.fingerprint,
                           **rec.kw())

    async def free_slots_later() -> None:
        await asyncio.sleep(2.5)
        for c in idle:
            await c.close()

    freer = asyncio.create_task(free_slots_later())
    try:
        await client.connect(timeout=20)
        assert client.connected
    finally:
        await freer
        await client.close()
    notices = [s for s in rec.states if "refused for now" in str(s.get("error"))]
    assert len(notices) == 1, rec.states  # said once, not at every attempt
    assert "have not authenticated yet" in notices[0]["error"] and "retrying" in notices[0]["error"]
    assert "failed" not in [s["link"] for s in rec.states]


async def test_a_flood_of_unauthenticated_frames_is_closed_early_and_agent_memory_stays_bounded(tmp_path) -> None:
    store = tmp_path / "tokens.json"
    token = TokenStore(store).create("console")
    cert = make_certificate(["127.0.0.1"], tmp_path / "certs", name="subject")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(MAIN), "--subject", "--host", "127.0.0.1", "--port", "0", "--tcp-port", "-1",
        "--local-port", "-1", "--tokens", str(store), "--cert", str(cert.cert), "--key", str(cert.key),
        env={**os.environ, "RTCONTROL_HOME": str(tmp_path / "home")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        url = re.search(r"console link (wss://\S+)", line).group(1)
        port = int(url.rsplit(":", 1)[1])
        rec = Recorder()
        client = SubjectClient(url, token=token, expected_fingerprint=cert.fingerprint, **rec.kw())
        await client.connect(timeout=10)
        await client.start_run({"run": "flood"})
        await asyncio.sleep(0.3)
        before = peak = rss(proc.pid)
        # 40 connections from another loopback address, each streaming 16 frames just under the 1 MiB link limit
        flood = [asyncio.create_task(flood_one(port, "127.0.0.2", 1_000_000, 16_000_000)) for _ in range(40)]
        for i in range(20):  # the console keeps working during the flood
            client.send_feedback("flood", i, i / 100)
            peak = max(peak, rss(proc.pid))
            await asyncio.sleep(0.05)
        outcomes = await asyncio.wait_for(asyncio.gather(*flood), 60)
        peak = max(peak, rss(proc.pid))
        await wait_until(lambda: not client.unacked, timeout=15, what="feedback acknowledged during the flood")
        await client.close()
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 20)
    stderr = (await proc.stderr.read()).decode()
    assert "sent all" not in outcomes, outcomes
    assert peak - before < 48 << 20, f"agent RSS grew by {(peak - before) >> 20} MiB during the flood"
    assert "Traceback" not in stderr


async def test_deeply_nested_json_on_the_console_link_is_refused_and_the_link_stays_up(agent_info, caplog) -> None:
    link = await transport.connect(agent_info.url, token=agent_info.token, expected_fingerprint=agent_info.fingerprint,
                                   hello={"role": "console", "protocol": P.PROTOCOL}, max_size=1 << 20)
    try:
        await link.conn.send(DEEP)
        while True:
            msg = json.loads(await asyncio.wait_for(link.conn.recv(), 5))
            if msg["type"] == "error":
                break
        assert "nested deeper than" in msg["message"]
        await link.conn.send(P.encode({"type": "ping", "t0": 1.0, "v": P.VERSION}))
        while msg["type"] != "pong":
            msg = json.loads(await asyncio.wait_for(link.conn.recv(), 5))
        assert msg["t0"] == 1.0
    finally:
        await link.conn.close()
    assert "RecursionError" not in caplog.text and "Traceback" not in caplog.text


async def test_deeply_nested_json_from_a_local_consumer_is_refused_with_an_error(agent_info, caplog) -> None:
    tcp = await LineConsumer.open(agent_info.tcp_port)
    try:
        await tcp.send(DEEP.encode())
        err = await tcp.next_of("error")
        assert "nested deeper than" in err["message"]
        await tcp.send({"type": "ping"})  # still connected
    finally:
        tcp.close()
    async with websockets.connect(f"ws://127.0.0.1:{agent_info.local_port}/ws", proxy=None, open_timeout=5) as ws:
        await ws.send(json.dumps({"type": "hello", "name": "deep", "secret": read_secret()}))
        await ws.send(DEEP)
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if msg["type"] == "error":
                break
        assert "nested deeper than" in msg["message"]
    assert "RecursionError" not in caplog.text and "Traceback" not in caplog.text
