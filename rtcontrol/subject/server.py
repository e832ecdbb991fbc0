"""The agent's sockets: the console link (wss via :mod:`rtcontrol.link.transport`) and the local consumers.

The console dials in with a pinned certificate and a token (the link checks both); after the link's
``welcome`` every frame is one JSON object of :mod:`rtcontrol.subject.protocol` with ``"v": 1``. One
console at a time: a newer connection (a reconnect) replaces an older one, and the agent's outbox
(acks, stamps, responses) waits for it while the link is down.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.server import Server, ServerConnection

from rtcontrol.link import transport
from rtcontrol.link.codec import encode_message
from rtcontrol.link.tokens import TokenStore
from rtcontrol.subject import protocol as P
from rtcontrol.subject.agent import SubjectAgent
from rtcontrol.subject.local import TcpServer, serve_local, serve_tcp

log = logging.getLogger(__name__)

CLOSE_REPLACED = 4000
#: Frames up to this size get a clear "too large" error and the link stays up; larger ones close it.
LINK_MAX_SIZE = 1024 * 1024


def encode_frame(msg: dict[str, Any]) -> str:
    return P.encode({**msg, "v": P.VERSION})


class ConsoleEndpoint:
    """Accepts console connections for one agent; newest wins."""

    def __init__(self, agent: SubjectAgent) -> None:
        self.agent = agent
        self.active: ServerConnection | None = None
        self.connections = 0

    async def handle(self, conn: ServerConnection, peer: transport.Peer) -> None:
        old = self.active
        self.active = conn
        self.connections += 1
        if old is not None:
            await old.close(CLOSE_REPLACED, "another console connected to this subject agent")
        await conn.send(encode_message("welcome", role="subject", protocol=P.PROTOCOL))
        log.info("console %s (%s) connected", peer.address, peer.token_name)
        self.agent.console_attached()
        writer = asyncio.create_task(self._drain(conn), name="subject outbox")
        try:
            async for raw in conn:
                received = time.monotonic()
                if isinstance(raw, bytes):
                    await conn.send(encode_frame({"type": "error", "message":
                                                  "binary frames are not used on the subject link"}))
                    continue
                try:
                    msg = P.decode(raw, "frame from console", P.CONSOLE_TO_AGENT)
                except P.ProtocolError as exc:
                    log.warning("%s", exc)
                    await conn.send(encode_frame({"type": "error", "message": str(exc)}))
                    continue
                if msg["type"] == "ping":  # answered at once, outside the outbox, for a clean clock sample
                    await conn.send(encode_frame({"type": "pong", "t0": msg.get("t0"), "t1": received,
                                                  "t2": time.monotonic()}))
                else:
                    self.agent.handle_console(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            if self.active is conn:
                self.active = None
            log.info("console %s disconnected", peer.address)

    async def _drain(self, conn: ServerConnection) -> None:
        outbox = self.agent.outbox
        while True:
            item = await outbox.get()
            try:
                await conn.send(encode_frame(item))
            except (websockets.ConnectionClosed, asyncio.CancelledError):
                outbox.unget(item)  # keep it for the next console connection
                raise


@dataclass
class RunningAgent:
    """An agent with its servers; :meth:`close` stops them all."""

    agent: SubjectAgent
    console: Server
    tcp: TcpServer | None
    local: Server | None
    endpoint: ConsoleEndpoint
    extras: list[Any] = field(default_factory=list)

    @property
    def console_port(self) -> int:
        return transport.bound_port(self.console)

    @property
    def tcp_port(self) -> int | None:
        return None if self.tcp is None else self.tcp.port

    @property
    def local_port(self) -> int | None:
        return None if self.local is None else transport.bound_port(self.local)

    async def close(self) -> None:
        servers: list[Any] = [self.console, self.local]
        for s in servers:
            if s is not None:
                s.close()
        if self.tcp is not None:
            await self.tcp.close()
        await self.agent.close()
        for s in servers:
            if s is not None:
                await s.wait_closed()


async def start_agent(
    agent: SubjectAgent,
    *,
    host: str,
    port: int,
    tokens: TokenStore,
    ssl_context: ssl.SSLContext | None,
    insecure_loopback: bool = False,
    tcp_port: int | None = 0,
    local_port: int | None = 0,
    consumer_secret: str,
) -> RunningAgent:
    """Serve the console link on ``host:port`` and the local consumers (None turns one off); stimulus
    programs must say ``consumer_secret`` in their hello (:mod:`rtcontrol.subject.secret`)."""
    endpoint = ConsoleEndpoint(agent)
    console = await transport.serve(
        endpoint.handle, host, port, tokens=tokens, ssl_context=ssl_context,
        insecure_loopback=insecure_loopback, max_size=LINK_MAX_SIZE, role="subject agent",
    )
    try:
        tcp = None if tcp_port is None else await serve_tcp(agent, tcp_port, secret=consumer_secret)
        local = None if local_port is None else await serve_local(agent, local_port, secret=consumer_secret)
    except OSError as exc:
        console.close()
        raise OSError(f"cannot listen for local consumers on 127.0.0.1 (tcp port {tcp_port}, local port "
                      f"{local_port}): {exc}") from exc
    return RunningAgent(agent, console, tcp, local, endpoint)
