"""Console -> agent -> consumers over real TLS on 127.0.0.1 (embedded agent, SubjectClient, NDJSON consumers)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from rtcontrol.link import transport
from rtcontrol.link.pinning import KnownHosts, PinMismatch
from rtcontrol.subject.link import SubjectClient, SubjectError
from tests.support.subject import LineConsumer, Recorder
from tests.support.wait import wait_until


async def test_feedback_reaches_every_consumer_with_stamps_in_console_clock(agent_info, client) -> None:
    a = await LineConsumer.open(agent_info.tcp_port)
    b = await LineConsumer.open(agent_info.tcp_port)
    await client.start_run({"run": "run-01", "tr": 2.0})
    for c in (a, b):
        assert (await c.next_of("run_start"))["run"] == "run-01"
    sent = time.monotonic()
    client.send_feedback("run-01", 0, 0.25, {"feedback_received": sent})
    got = [await c.next_of("feedback") for c in (a, b)]
    assert all(g == {"type": "feedback", "run": "run-01", "index": 0, "value": 0.25, "late": False} for g in got)
    rec = client.recorder
    await wait_until(lambda: len(rec.deliveries.get(("run-01", 0), {}).get("consumers", {})) == 2,
                     what="both consumers' stamps")
    stamps = rec.deliveries[("run-01", 0)]
    # same host: the console clock and the agent's agree, so the stamps fall between send and now
    assert sent <= stamps["subject_delivered"] <= stamps["consumer_taken"] <= time.monotonic()
    assert stamps["late"] is False and client.unacked == {}


async def test_responses_flow_back_to_the_console(agent_info, client) -> None:
    c = await LineConsumer.open(agent_info.tcp_port)
    await client.start_run({"run": "run-02"})
    await c.send({"type": "response", "button": 2, "rt": 0.41})
    rec = client.recorder
    await wait_until(lambda: rec.responses, what="a response")
    r = rec.responses[0]
    assert r["run"] == "run-02" and r["data"] == {"button": 2, "rt": 0.41} and r["consumer"].startswith("tcp")
    assert abs(r["t"] - time.monotonic()) < 1.0


async def test_messages_and_run_stop_reach_consumers(agent_info, client) -> None:
    c = await LineConsumer.open(agent_info.tcp_port)
    await client.start_run({"run": "r"})
    client.send_message("Rest", kind="rest")
    msg = await c.next_of("message")
    assert (msg["kind"], msg["text"], msg["run"]) == ("rest", "Rest", "r")
    await client.stop_run("r")
    assert (await c.next_of("run_stop"))["run"] == "r"


async def test_garbage_from_a_consumer_gets_an_error_and_it_stays_connected(agent_info, client) -> None:
    c = await LineConsumer.open(agent_info.tcp_port)
    await c.send(b"this is not json")
    err = await c.next_of("error")
    assert "not JSON" in err["message"] and "tcp-" in err["message"]
    await c.send({"type": "response", "ok": True})
    await wait_until(lambda: client.recorder.responses, what="the response after the garbage")


async def test_oversized_consumer_line_is_refused_and_closed(agent_info) -> None:
    c = await LineConsumer.open(agent_info.tcp_port)
    c.writer.write(b"x" * (200 * 1024))
    await c.writer.drain()
    err = await c.next_of("error")
    assert "over the 65536-byte limit" in err["message"]
    assert await asyncio.wait_for(c.reader.read(), 5) == b""  # closed


async def test_garbage_and_oversized_frames_from_the_console_get_clear_errors(agent_info) -> None:
    connected = await transport.connect(agent_info.url, token=agent_info.token,
                                        expected_fingerprint=agent_info.fingerprint)
    conn = connected.conn
    try:
        async def error_after(frame):
            await conn.send(frame)
            while True:
                msg = json.loads(await asyncio.wait_for(conn.recv(), 5))
                if msg["type"] == "error":
                    return msg["message"]

        assert "not JSON" in await error_after("{{{")
        assert "over the 65536-byte limit" in await error_after(json.dumps({"type": "feedback", "x": "y" * 70000}))
        assert "unknown message type 'exec'" in await error_after(json.dumps({"type": "exec"}))
        assert "binary frames are not used" in await error_after(b"\x00\x01")
        assert "needs a volume 'index'" in await error_after(json.dumps({"type": "feedback", "run": "r", "value": 1}))
        # the link survived all of it
        await conn.send(json.dumps({"type": "ping", "t0": 1.0, "v": 1}))
        while (msg := json.loads(await asyncio.wait_for(conn.recv(), 5)))["type"] != "pong":
            pass
        assert msg["t0"] == 1.0
    finally:
        await conn.close()


async def test_bad_token_is_refused(agent_info) -> None:
    c = SubjectClient(agent_info.url, token="rtc_wrong", expected_fingerprint=agent_info.fingerprint)
    with pytest.raises(transport.AuthError, match="refused the token"):
        await c.connect(timeout=10)
    await c.close()


async def test_changed_certificate_is_refused(agent_info, tmp_path) -> None:
    pins = KnownHosts(tmp_path / "known_hosts")
    peer = agent_info.url.removeprefix("wss://")
    pins.add(peer, "SHA256:" + ":".join(["AB"] * 32))
    c = SubjectClient(agent_info.url, token=agent_info.token, pins=pins)
    with pytest.raises(PinMismatch, match="has changed"):
        await c.connect(timeout=10)
    await c.close()


async def test_plain_websocket_needs_loopback_and_an_explicit_flag(agent_info) -> None:
    c = SubjectClient(agent_info.url.replace("wss://", "ws://"), token=agent_info.token)
    with pytest.raises(transport.LinkError, match="plain ws:// without TLS was not requested"):
        await c.connect(timeout=2)
    await c.close()


async def test_impossible_onset_delay_is_refused_at_run_start(agent_info, client) -> None:
    with pytest.raises(SubjectError, match="negative"):
        await client.start_run({"run": "r", "onset": {"mode": "delay", "delay": -1}})
    # the agent checks too (a console that skips the local check gets the same answer)
    client._send_now({"type": "run_start", "run": "r", "settings": {"onset": {"mode": "delay", "delay": 99}}})
    await wait_until(lambda: client.recorder.errors, what="the agent's refusal")
    assert "over the 30 s limit" in client.recorder.errors[0]
    assert agent_info.agent.current is None


async def test_delayed_onset_waits_for_acquisition_plus_delay(agent_info, client) -> None:
    c = await LineConsumer.open(agent_info.tcp_port)
    await client.start_run({"run": "r", "onset": {"mode": "delay", "delay": 0.3}})
    acquired = time.monotonic()
    client.send_feedback("r", 0, 1.0, acquired=acquired)
    await c.next_of("feedback")
    waited = time.monotonic() - acquired
    assert 0.295 <= waited < 1.0
    await wait_until(lambda: "consumer_taken" in client.recorder.deliveries.get(("r", 0), {}), what="stamps")
    stamps = client.recorder.deliveries[("r", 0)]
    assert 0.295 <= stamps["released"] - acquired < 0.6  # not early (clock offset error ~0.1 ms), jitter late
    assert stamps["onset_missed"] is False


async def test_feedback_arriving_after_its_onset_goes_out_at_once_marked(agent_info, client) -> None:
    c = await LineConsumer.open(agent_info.tcp_port)
    await client.start_run({"run": "r", "onset": {"mode": "delay", "delay": 0.1}})
    t = time.monotonic()
    client.send_feedback("r", 0, 1.0, acquired=t - 1.0)  # the analysis took longer than the delay
    await c.next_of("feedback")
    assert time.monotonic() - t < 0.5
    await wait_until(lambda: "consumer_taken" in client.recorder.deliveries.get(("r", 0), {}), what="stamps")
    assert client.recorder.deliveries[("r", 0)]["onset_missed"] is True


async def test_tr_boundary_onset(agent_info, client) -> None:
    c = await LineConsumer.open(agent_info.tcp_port)
    t0 = time.monotonic()
    await client.start_run({"run": "r", "tr": 0.4, "onset": "tr", "t0": t0})
    await asyncio.sleep(0.05)
    client.send_feedback("r", 0, 1.0)  # no acquisition time: boundaries count from t0
    await c.next_of("feedback")
    assert 0.395 <= time.monotonic() - t0 < 0.7  # the boundary, give or take scheduling jitter


async def test_stop_cancels_pending_onsets(agent_info, client) -> None:
    c = await LineConsumer.open(agent_info.tcp_port)
    await client.start_run({"run": "r", "onset": {"mode": "delay", "delay": 5.0}})
    client.send_feedback("r", 0, 1.0, acquired=time.monotonic())
    await wait_until(lambda: ("r", 0) in client.recorder.deliveries, what="ack")
    await client.stop_run()
    assert (await c.next_of("run_stop"))["run"] == "r"
    await wait_until(lambda: "cancelled" in client.recorder.deliveries[("r", 0)], what="cancellation report")


async def test_slow_and_vanishing_consumers_do_not_block_others(agent_info, client) -> None:
    fast = await LineConsumer.open(agent_info.tcp_port)
    slow = await LineConsumer.open(agent_info.tcp_port)  # never reads: its socket buffers fill up
    gone = await LineConsumer.open(agent_info.tcp_port)
    await client.start_run({"run": "r"})
    big = "x" * 12_000
    n = 1000  # ~12 MB: more than the loopback socket buffers and the 256-item queue hold
    seen: list[int] = []

    async def read_fast() -> None:
        while len(seen) < n:
            msg = await fast.next(timeout=10)
            if msg["type"] == "feedback":
                seen.append(msg["value"]["value"])

    reader = asyncio.create_task(read_fast())
    for i in range(n):  # paced a little (a real run sends one value per TR), never waiting for consumers
        client.send_feedback("r", i, {"value": i, "pad": big})
        if i == 50:
            gone.writer.transport.abort()
        await asyncio.sleep(0.001)
    await asyncio.wait_for(reader, 20)
    assert seen == list(range(n))  # in order, nothing lost, while the slow one is stuck
    await wait_until(lambda: not client.unacked, what="every ack")
    state = agent_info.agent.state()
    by_name = {c["name"]: c for c in state["consumers"]}
    assert len(by_name) == 2  # the vanished one left
    slow_info = [c for c in by_name.values() if c["taken"] < n]
    assert slow_info and slow_info[0]["dropped"] > 0
    slow.close()


class CuttableProxy:
    """A TCP relay the test can cut and restore, to drop the console link mid-run."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = True
        self.pipes: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _on_client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if not self.up:
            w.transport.abort()
            return
        ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.pipes |= {w, uw}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pump(r, uw), pump(ur, w))

    def cut(self) -> None:
        self.up = False
        for w in self.pipes:
            w.transport.abort()
        self.pipes.clear()

    async def close(self) -> None:
        self.cut()
        self.server.close()
        await self.server.wait_closed()


async def test_feedback_missed_while_the_link_was_down_arrives_late_once(agent_info) -> None:
    proxy = CuttableProxy(int(agent_info.url.rsplit(":", 1)[1]))
    port = await proxy.start()
    rec = Recorder()
    client = SubjectClient(f"wss://127.0.0.1:{port}", token=agent_info.token,
                           expected_fingerprint=agent_info.fingerprint, backoff=(0.05, 0.2), **rec.kw())
    consumer = await LineConsumer.open(agent_info.tcp_port)
    try:
        await client.connect(timeout=10)
        await client.start_run({"run": "r"})
        for i in range(2):
            client.send_feedback("r", i, i / 10)
        await wait_until(lambda: not client.unacked, what="first acks")
        proxy.cut()
        await wait_until(lambda: not client.connected, what="the link to drop")
        for i in range(2, 5):
            client.send_feedback("r", i, i / 10)  # nowhere to go yet
        await consumer.send({"type": "response", "button": 3})  # the agent keeps it for the console
        await asyncio.sleep(0.3)
        assert sorted(client.unacked) == [("r", 2), ("r", 3), ("r", 4)]
        proxy.up = True
        await wait_until(lambda: not client.unacked, timeout=10, what="resend after reconnect")
        got = []
        while len(got) < 5:
            msg = await consumer.next()
            if msg["type"] == "feedback":
                got.append((msg["index"], msg["late"]))
        assert got == [(0, False), (1, False), (2, True), (3, True), (4, True)]
        assert client.connections == 2
        await wait_until(lambda: "consumer_taken" in rec.deliveries.get(("r", 4), {}), what="late stamps")
        assert rec.deliveries[("r", 4)]["late"] is True
        await wait_until(lambda: rec.responses, what="the response given while the link was down")
        assert rec.responses[0]["data"] == {"button": 3}
        assert [s["link"] for s in rec.states].count("connected") >= 2
    finally:
        await client.close()
        await proxy.close()
        consumer.close()


async def test_a_resent_value_is_acknowledged_but_delivered_once(agent_info, client) -> None:
    c = await LineConsumer.open(agent_info.tcp_port)
    client.send_feedback("r", 7, 0.7)
    await c.next_of("feedback")
    client._send_now({**client.unacked.get(("r", 7), {"type": "feedback", "run": "r", "index": 7, "value": 0.7}),
                      "late": True})
    client.send_feedback("r", 8, 0.8)
    nxt = await c.next_of("feedback")
    assert nxt["index"] == 8  # 7 did not come twice


async def test_agent_survives_console_reconnects(agent_info) -> None:
    for _ in range(3):
        rec = Recorder()
        c = SubjectClient(agent_info.url, token=agent_info.token, expected_fingerprint=agent_info.fingerprint,
                          **rec.kw())
        await c.connect(timeout=10)
        await c.start_run({"run": "again"})
        await c.close()
    assert agent_info.running.endpoint.connections == 3
    assert agent_info.agent.current is not None and agent_info.agent.current.run == "again"


async def test_consumer_names_itself_and_bad_names_are_refused(agent_info) -> None:
    c = await LineConsumer.open(agent_info.tcp_port, name="ptb")
    assert c.name.startswith("ptb-")
    await c.send({"type": "hello", "name": "other"})  # one hello per connection: the name stays
    assert "already said hello" in (await c.next_of("error"))["message"]
    with pytest.raises(AssertionError, match="letters, digits"):
        await LineConsumer.open(agent_info.tcp_port, name="../../etc")


async def test_page_files_are_served_and_nothing_outside(agent_info) -> None:
    import urllib.error
    import urllib.request

    def get(path: str) -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{agent_info.local_port}{path}", timeout=5) as r:
                return r.status, r.headers["Content-Type"], r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers["Content-Type"], e.read()

    status, ctype, body = await asyncio.to_thread(get, "/")
    assert status == 200 and ctype.startswith("text/html") and b"rtcontrol feedback" in body
    status, ctype, body = await asyncio.to_thread(get, "/plugin-rtcontrol-feedback.js")
    assert status == 200 and "javascript" in ctype and b"jsPsychRtcontrolFeedback" in body
    for bad in ("/../../rtcontrol/subject/agent.py", "/%2e%2e/%2e%2e/README.md", "/nope.js"):
        status, _, body = await asyncio.to_thread(get, bad)
        assert status == 404, bad
