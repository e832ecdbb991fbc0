"""Helpers for subject-agent tests: a real agent on 127.0.0.1 with TLS, and NDJSON consumers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rtcontrol.link.tokens import TokenStore
from rtcontrol.subject.embedded import local_subject_agent
from rtcontrol.subject.link import SubjectClient
from rtcontrol.subject.secret import read_secret

MAIN = Path(__file__).resolve().parents[2] / "main.py"


class LineConsumer:
    """A TCP NDJSON consumer, as a MATLAB script would be."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, secret: str | None = None, name: str | None = None) -> LineConsumer:
        """Connect and say hello with the agent's secret (default: the one in the test's rtcontrol home)."""
        r, w = await asyncio.open_connection("127.0.0.1", port)
        c = cls(r, w)
        hello: dict[str, Any] = {"type": "hello", "secret": read_secret() if secret is None else secret}
        if name:
            hello["name"] = name
        await c.send(hello)
        reply = await c.next()
        assert reply["type"] == "hello", reply
        c.name = reply["consumer"]
        return c

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.reader.readline(), timeout))

    async def next_of(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        while True:
            msg = await self.next(timeout)
            if msg["type"] == kind:
                return msg

    async def send(self, obj: Any) -> None:
        self.writer.write((obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n")
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


class Recorder:
    """Collects SubjectClient callbacks."""

    def __init__(self) -> None:
        self.deliveries: dict[tuple[str, int], dict[str, Any]] = {}
        self.responses: list[dict[str, Any]] = []
        self.states: list[dict[str, Any]] = []
        self.errors: list[str] = []

    def on_delivery(self, run: str, index: int, stamps: dict[str, Any]) -> None:
        self.deliveries.setdefault((run, index), {}).update(stamps)

    def kw(self) -> dict[str, Any]:
        return dict(on_delivery=self.on_delivery, on_response=self.responses.append,
                    on_state=self.states.append, on_error=self.errors.append)


async def wait_until(pred, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.fixture(autouse=True)
def rtcontrol_home(tmp_path, monkeypatch):
    """Each test's own rtcontrol home: the agent's consumer secret is made there, and stimulus programs
    (in this process or started by the test) read it from there."""
    home = tmp_path / "rtcontrol-home"
    monkeypatch.setenv("RTCONTROL_HOME", str(home))
    return home


@pytest.fixture
async def agent_info():
    async with local_subject_agent() as info:
        yield info


@pytest.fixture
async def client(agent_info):
    rec = Recorder()
    c = SubjectClient(agent_info.url, token=agent_info.token, expected_fingerprint=agent_info.fingerprint,
                      **rec.kw())
    c.recorder = rec  # type: ignore[attr-defined]
    await c.connect(timeout=10)
    yield c
    await c.close()


@contextlib.asynccontextmanager
async def agent_process(home: Path, *extra: str) -> AsyncIterator[dict[str, Any]]:
    """A real ``main.py --subject`` process on 127.0.0.1 with its own rtcontrol home; yields what its banner
    says (url, fingerprint, tcp and local ports, page, secret file) plus a console token. Stopped with Ctrl+C."""
    home.mkdir(parents=True, exist_ok=True)
    store = home / "tokens.json"
    token = TokenStore(store).create("console")
    env = {**os.environ, "RTCONTROL_HOME": str(home)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(MAIN), "--subject", "--host", "127.0.0.1", "--port", "0", "--tcp-port", "0",
        "--local-port", "0", "--tokens", str(store), *extra, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        text = ""
        while "NDJSON" not in text:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, f"agent exited early: {(await proc.stderr.read()).decode()}"
            text += line.decode()
        yield {
            "proc": proc,
            "token": token,
            "url": re.search(r"console link (wss://\S+)", text).group(1),
            "fingerprint": re.search(r"fingerprint (SHA256:\S+)", text).group(1),
            "tcp": int(re.search(r"NDJSON for PsychToolbox/MATLAB on 127.0.0.1:(\d+)", text).group(1)),
            "local": int(re.search(r"websocket ws://127.0.0.1:(\d+)/ws", text).group(1)),
            "page": re.search(r"jsPsych page (http://\S+)", text).group(1),
            "secret_file": re.search(r"consumer secret \(stimulus programs send it in their hello\): (.+)",
                                     text).group(1).strip(),
        }
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
