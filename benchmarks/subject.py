"""``BENCH subject_delivery``: console -> subject agent -> local consumer, on loopback with TLS.

The agent runs as its own process (``main.py --subject``, as on a presentation PC); this process plays the
console (:class:`SubjectClient` over wss with a pinned certificate and a token) and the stimulus program
(an NDJSON reader on the agent's TCP port, as MATLAB would be; then :class:`FeedbackClient`). Each sample
is the time from ``send_feedback`` to the consumer holding the value, both stamped here on one clock.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from benchmarks.stats import Figure, timing
from rtcontrol.link.tokens import TokenStore
from rtcontrol.paths import app_root
from rtcontrol.subject.client import FeedbackClient
from rtcontrol.subject.link import SubjectClient
from rtcontrol.subject.secret import read_secret

N = 500
WARMUP = 20


async def _start_agent(folder: Path) -> tuple[asyncio.subprocess.Process, dict[str, str], str]:
    store = folder / "tokens.json"
    token = TokenStore(store).create("bench")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(app_root() / "main.py"), "--subject", "--host", "127.0.0.1", "--port", "0",
        "--tcp-port", "0", "--local-port", "0", "--tokens", str(store),
        env={**os.environ, "RTCONTROL_HOME": str(folder / "home")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    text = ""
    while "NDJSON" not in text:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line:
            raise RuntimeError("the subject agent exited before it was ready")
        text += line.decode()
    ports = {
        "url": re.search(r"console link (wss://\S+)", text).group(1),  # type: ignore[union-attr]
        "fingerprint": re.search(r"fingerprint (SHA256:\S+)", text).group(1),  # type: ignore[union-attr]
        "tcp": re.search(r"on 127.0.0.1:(\d+)", text).group(1),  # type: ignore[union-attr]
        "local": re.search(r"ws://127.0.0.1:(\d+)/ws", text).group(1),  # type: ignore[union-attr]
    }
    return proc, ports, token


async def _measure() -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory(prefix="rtcontrol-bench-subject-") as tmp:
        proc, ports, token = await _start_agent(Path(tmp))
        try:
            client = SubjectClient(ports["url"], token=token, expected_fingerprint=ports["fingerprint"])
            await client.connect()
            secret_file = Path(tmp) / "home" / "consumer.secret"  # the agent's RTCONTROL_HOME
            reader, writer = await asyncio.open_connection("127.0.0.1", int(ports["tcp"]))
            writer.write(json.dumps({"type": "hello", "name": "bench", "secret": read_secret(secret_file)}).encode()
                         + b"\n")
            await reader.readline()  # hello
            await client.start_run({"run": "bench"})
            tcp: list[float] = []
            for i in range(N + WARMUP):
                t = time.monotonic()
                client.send_feedback("bench", i, i / N)
                while json.loads(await reader.readline()).get("type") != "feedback":
                    pass
                if i >= WARMUP:
                    tcp.append(time.monotonic() - t)
                await asyncio.sleep(0.002)
            writer.close()

            fb = await asyncio.to_thread(FeedbackClient, int(ports["local"]), secret_file=secret_file)
            try:
                await client.start_run({"run": "bench-ws"})
                ws: list[float] = []
                for i in range(N + WARMUP):
                    t = time.monotonic()
                    client.send_feedback("bench-ws", i, i / N)
                    got = await asyncio.to_thread(fb.wait_for, i, 5.0, "bench-ws")
                    if i >= WARMUP:
                        ws.append(got.received - t)
                    await asyncio.sleep(0.002)
            finally:
                await asyncio.to_thread(fb.close)
            await client.close()
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
    return tcp, ws


def bench() -> Iterable[Figure]:
    tcp, ws = asyncio.run(_measure())
    yield timing("subject_delivery", tcp, "console -> agent process (wss) -> NDJSON consumer, loopback")
    yield timing("subject_delivery_feedbackclient", ws,
                 "console -> agent process (wss) -> FeedbackClient (local websocket, thread)")
