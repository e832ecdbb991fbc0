"""A subject agent inside the calling process, on 127.0.0.1, for the console's embedded default and tests.

A fresh certificate and token are made in a temporary folder, so the embedded link is exactly the one a
presentation PC gets (TLS, pinned fingerprint, token); nothing is written to the user's known hosts::

    async with local_subject_agent() as info:
        client = SubjectClient(info.url, token=info.token, expected_fingerprint=info.fingerprint)
"""

from __future__ import annotations

import tempfile
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

from rtcontrol.link.certs import make_certificate, server_context
from rtcontrol.link.tokens import TokenStore
from rtcontrol.subject.agent import SubjectAgent
from rtcontrol.subject.server import RunningAgent, start_agent


@dataclass(frozen=True)
class AgentInfo:
    url: str  # wss://127.0.0.1:PORT
    token: str
    fingerprint: str
    tcp_port: int | None  # NDJSON consumers
    local_port: int | None  # HTTP page + /ws websocket consumers
    agent: SubjectAgent
    running: RunningAgent
    display: Any = None  # the built-in display window, if asked for

    @property
    def page_url(self) -> str | None:
        return None if self.local_port is None else f"http://127.0.0.1:{self.local_port}/"


@asynccontextmanager
async def local_subject_agent(
    display: bool = False,
    *,
    tcp_port: int | None = 0,
    local_port: int | None = 0,
    screen: int | None = None,
    windowed: bool = True,
) -> AsyncIterator[AgentInfo]:
    """Run an agent on loopback with TLS; ``display=True`` also opens the built-in display (needs a Qt
    application and a qasync loop, as the console GUI has)."""
    with tempfile.TemporaryDirectory(prefix="rtcontrol-subject-") as tmp:
        folder = Path(tmp)
        certs = make_certificate(["127.0.0.1", "localhost"], folder, name="subject")
        store = TokenStore(folder / "tokens.json")
        token = store.create("embedded-console")
        agent = SubjectAgent()
        running = await start_agent(
            agent, host="127.0.0.1", port=0, tokens=store, ssl_context=server_context(certs.cert, certs.key),
            tcp_port=tcp_port, local_port=local_port,
        )
        window = None
        try:
            if display:
                from rtcontrol.subject.display import attach_display  # Qt only when asked for

                window = attach_display(agent, screen=screen, windowed=windowed)
            yield AgentInfo(f"wss://127.0.0.1:{running.console_port}", token, certs.fingerprint,
                            running.tcp_port, running.local_port, agent, running, window)
        finally:
            if window is not None:
                window.close()
            await running.close()
