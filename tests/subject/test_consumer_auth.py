"""Local injection: only the user's own stimulus programs (holding the agent's consumer secret) are heard, and
only the agent's own page may open the websocket from a browser."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import connect

from rtcontrol.subject import FeedbackClient
from rtcontrol.subject import secret as S
from tests.support.subject import LineConsumer
from tests.support.wait import wait_until

INJECTED = [
    {"type": "hello", "name": "display"},  # no secret
    {"type": "hello", "name": "display", "secret": "guess"},  # a wrong one
    {"type": "hello", "name": "display", "secret": 12345},  # not even a string
]


async def _refused_line(port: int, first: dict) -> tuple[str, bytes]:
    """Connect, say ``first`` then try to inject; what came back and what followed (b"" = closed)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(json.dumps(first).encode() + b"\n")
        w.write(b'{"type": "response", "button": 666}\n{"type": "displayed", "run": "r", "index": 0}\n')
        await w.drain()
        reply = json.loads(await asyncio.wait_for(r.readline(), 5))
        assert reply["type"] == "error", reply
        rest = await asyncio.wait_for(r.read(), 5)
        return reply["message"], rest
    finally:
        w.close()


@pytest.mark.parametrize("first", INJECTED + [{"type": "response", "button": 666}], ids=[
    "no-secret", "wrong-secret", "number-secret", "no-hello"])
async def test_a_local_program_without_the_secret_is_refused_and_never_heard(agent_info, client, first) -> None:
    await client.start_run({"run": "r"})
    client.send_feedback("r", 0, 0.5)
    message, rest = await _refused_line(agent_info.tcp_port, first)
    assert "secret" in message and "consumer.secret" in message and "connection closed" in message
    assert rest == b""  # no feedback, no hello, nothing: closed
    # a real stimulus program still works, and its response is the only one that arrives
    good = await LineConsumer.open(agent_info.tcp_port, name="stim")
    await good.send({"type": "response", "button": 1})
    rec = client.recorder
    await wait_until(lambda: rec.responses, what="the real program's response")
    await asyncio.sleep(0.2)
    assert [r["data"] for r in rec.responses] == [{"button": 1}]
    assert rec.responses[0]["consumer"] == good.name
    assert "displayed" not in rec.deliveries.get(("r", 0), {})  # the injected stamp was not believed
    assert all(c["name"] == good.name for c in agent_info.agent.state()["consumers"])


@pytest.mark.parametrize("hello", INJECTED, ids=["no-secret", "wrong-secret", "number-secret"])
async def test_a_websocket_without_the_secret_is_refused_and_never_heard(agent_info, client, hello) -> None:
    await client.start_run({"run": "r"})
    async with connect(f"ws://127.0.0.1:{agent_info.local_port}/ws") as ws:
        await ws.send(json.dumps(hello))
        await ws.send(json.dumps({"type": "response", "button": 666}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert reply["type"] == "error" and "secret" in reply["message"]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    await asyncio.sleep(0.2)
    assert client.recorder.responses == []
    assert agent_info.agent.state()["consumers"] == []


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:1", "null",
                                    "https://127.0.0.1"])
async def test_a_page_from_another_origin_cannot_open_the_websocket(agent_info, origin) -> None:
    """A web page the subject PC happens to show must not reach the agent, even if it had the secret."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{agent_info.local_port}/ws", origin=origin):
            pass
    assert refused.value.response.status_code == 403
    assert b"only the agent's own page" in refused.value.response.body


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_the_agents_own_page_origin_with_the_secret_is_let_in(agent_info, client, host) -> None:
    port = agent_info.local_port
    async with connect(f"ws://127.0.0.1:{port}/ws", origin=f"http://{host}:{port}") as ws:
        await ws.send(json.dumps({"type": "hello", "name": "page", "secret": agent_info.secret}))
        hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert hello["type"] == "hello" and hello["consumer"].startswith("page-")
        # who sent a response is the agent's word, from the authenticated connection, not the message's
        await ws.send(json.dumps({"type": "response", "consumer": "display", "consumer_kind": "display", "key": 1}))
        await wait_until(lambda: client.recorder.responses, what="the page's response")
    r = client.recorder.responses[0]
    assert (r["consumer"], r["consumer_kind"]) == (hello["consumer"], "ws")
    assert r["data"] == {"consumer": "display", "consumer_kind": "display", "key": 1}  # only as data


async def test_feedback_client_reads_the_secret_file_and_a_wrong_one_is_a_clear_error(agent_info, tmp_path) -> None:
    fb = await asyncio.to_thread(FeedbackClient, agent_info.local_port)  # the default file, as PsychoPy uses it
    try:
        assert fb.name and fb.name.startswith("python-")
    finally:
        await asyncio.to_thread(fb.close)
    with pytest.raises(ConnectionError, match="refused this program: .*wrong consumer secret"):
        await asyncio.to_thread(FeedbackClient, agent_info.local_port, secret="not-it")
    with pytest.raises(ConnectionError, match="no consumer secret at .*nowhere"):
        await asyncio.to_thread(FeedbackClient, agent_info.local_port, secret_file=tmp_path / "nowhere")
    fb = await asyncio.to_thread(FeedbackClient, agent_info.local_port, secret=agent_info.secret)
    await asyncio.to_thread(fb.close)


def test_the_secret_is_made_once_for_the_user_only_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "home" / "consumer.secret"
    first = S.load_or_create(path)
    assert len(first) >= 40 and S.read_secret(path) == first
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        path.chmod(0o644)  # loosened by hand: tightened again on the next start
    assert S.load_or_create(path) == first  # a restart keeps it: scripts set up once keep working
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert S.matches(first, first) and not S.matches(first[:-1], first) and not S.matches(None, first)
    assert list(path.parent.iterdir()) == [path]  # no temporary files left behind
