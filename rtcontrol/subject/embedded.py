"""A subject agent inside the calling process, on 127.0.0.1, for the console's embedded default and tests.

A fresh certificate and token are made in a temporary folder, so the embedded link is exactly the one a
presentation PC gets (TLS, pinned fingerprint, token); nothing is written to the user's known hosts. Stimulus programs
authenticate with the same consumer secret as a stand-alone agent's (``consumer.secret`` in the user's rtcontrol home,
made on first use), so a script set up once works with both::

    async with local_subject_agent() as info:
        client = SubjectClient(info.url, token=info.token, expected_fingerprint=info.fingerprint)
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtcontrol.link.certs import make_certificate, server_context
from rtcontrol.link.tokens import TokenStore
from rtcontrol.subject import secret as consumer_secret
from rtcontrol.subject.agent import SubjectAgent
from rtcontrol.subject.local import page_url
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
    secret: str = ""  # what stimulus programs say in their hello
    secret_file: Path | None = None
    display: Any = None  # the built-in display window, if asked for

    @property
    def page_url(self) -> str | None:
        """The jsPsych page, with the consumer secret it passes on in its hello."""
        if self.local_port is None:
            return None
        return page_url(self.local_port, self.secret)


@asynccontextmanager
async def local_subject_agent(
    display: bool = False,
    *,
    tcp_port: int | None = 0,
    local_port: int | None = 0,
    screen: int | None = None,
    windowed: bool = True,
    secret_file: Path | None = None,
) -> AsyncIterator[AgentInfo]:
    """Run an agent on loopback with TLS; ``display=True`` also opens the built-in display (needs a Qt
    application and a qasync loop, as the console GUI has). ``secret_file``: where the consumer secret is
    kept (default ``consumer.secret`` in the rtcontrol home)."""
    secret_file = secret_file or consumer_secret.default_path()
    secret = consumer_secret.load_or_create(secret_file)
    with tempfile.TemporaryDirectory(prefix="rtcontrol-subject-") as tmp:
        folder = Path(tmp)
        certs = make_certificate(["127.0.0.1", "localhost"], folder, name="subject")
        store = TokenStore(folder / "tokens.json")
        token = store.create("embedded-console")
        agent = SubjectAgent()
        running = await start_agent(
            agent, host="127.0.0.1", port=0, tokens=store, ssl_context=server_context(certs.cert, certs.key),
            tcp_port=tcp_port, local_port=local_port, consumer_secret=secret,
        )
        window = None
        try:
            if display:
                from rtcontrol.subject.display import attach_display  # Qt only when asked for

                window = attach_display(agent, screen=screen, windowed=windowed)
            yield AgentInfo(f"wss://127.0.0.1:{running.console_port}", token, certs.fingerprint,
                            running.tcp_port, running.local_port, agent, running, secret, secret_file, window)
        finally:
            if window is not None:
                window.close()
            await running.close()
