"""Helpers for subject-agent tests: NDJSON consumers, callback recorders, an agent process."""

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

from rtcontrol.link.events import Delivery, Problem, Response, StateChanged
from rtcontrol.link.tokens import TokenStore
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

    def on_event(self, event: Any) -> None:
        match event:
            case Delivery(run=run, index=index, stamps=stamps):
                self.deliveries.setdefault((run, index), {}).update(stamps)
            case Response(response=response):
                self.responses.append(response)
            case StateChanged():
                error = {"error": event.error} if event.error else {}
                self.states.append({**event.agent, "link": event.state, **error})
            case Problem(message=message):
                self.errors.append(message)

    def kw(self) -> dict[str, Any]:
        return dict(on_event=self.on_event)


def _secret_file(banner: str) -> str:
    """Where the agent's banner says its consumer secret is."""
    found = re.search(r"consumer secret \(stimulus programs send it in their hello\): (.+)", banner)
    assert found, banner
    return found.group(1).strip()


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
        banner = await _read_banner(proc)
        yield {"proc": proc, "token": token, **banner, "tcp": int(banner["tcp"]), "local": int(banner["local"])}
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _read_banner(proc: asyncio.subprocess.Process) -> dict[str, str]:
    text = ""
    while "NDJSON" not in text:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line, f"agent exited early: {(await proc.stderr.read()).decode()}"
        text += line.decode()
    return {
        "url": re.search(r"console link (wss://\S+)", text).group(1),
        "fingerprint": re.search(r"fingerprint (SHA256:\S+)", text).group(1),
        "tcp": re.search(r"NDJSON for PsychToolbox/MATLAB on 127.0.0.1:(\d+)", text).group(1),
        "local": re.search(r"websocket ws://127.0.0.1:(\d+)/ws", text).group(1),
        "page": re.search(r"jsPsych page (http://\S+)", text).group(1),
        "secret_file": _secret_file(text),
    }
