"""A stimulus program on the presentation PC: newline-delimited JSON from the subject agent's TCP port.

It says the agent's consumer secret (``consumer.secret`` in the agent's home) in its hello, records every
line it receives with the time it arrived, and can answer with a response. This is what a PsychToolbox or
MATLAB script does (``resources/matlab/rtcontrol_feedback.m``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from .procs import HOST


@dataclass
class Received:
    t: float
    msg: dict[str, Any]


@dataclass
class Stimulus:
    port: int
    secret: str | None
    name: str = "ledger"
    got: list[Received] = field(default_factory=list)
    closed: bool = False
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> Stimulus:
        self._reader, self._writer = await asyncio.open_connection(HOST, self.port)
        hello: dict[str, Any] = {"type": "hello", "name": self.name}
        if self.secret is not None:
            hello["secret"] = self.secret
        self.send(hello)
        self._task = asyncio.create_task(self._read())
        return self

    def send(self, msg: dict[str, Any]) -> None:
        assert self._writer is not None
        self._writer.write(json.dumps(msg).encode() + b"\n")

    async def _read(self) -> None:
        assert self._reader is not None
        try:
            while line := await self._reader.readline():
                with contextlib.suppress(ValueError):
                    self.got.append(Received(time.monotonic(), json.loads(line)))
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed = True

    def feedback(self, run: str | None = None) -> list[Received]:
        """Feedback lines received (for ``run`` only, if given), in arrival order."""
        return [r for r in self.got if r.msg.get("type") == "feedback" and (run is None or r.msg.get("run") == run)]

    async def wait_feedback(self, index: int, timeout: float) -> float:
        """When feedback for volume ``index`` (or a later one) arrived; bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.feedback():
                if isinstance(r.msg.get("index"), int) and r.msg["index"] >= index:
                    return r.t
            await asyncio.sleep(0.02)
        raise AssertionError(f"the stimulus program got no feedback for volume {index} within {timeout:.0f} s; "
                             f"got {[r.msg.get('index') for r in self.feedback()]}")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 2.0)
