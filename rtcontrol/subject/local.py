"""Local consumer servers on 127.0.0.1: NDJSON over TCP, and HTTP + websocket for browsers and Python.

* ``--tcp-port``: one JSON object per line each way (PsychToolbox/MATLAB, anything with a socket).
* ``--local-port``: ``GET /`` serves the jsPsych page and plugin from ``resources/jspsych``; ``/ws`` is a
  websocket that pushes the same JSON objects as text frames (jsPsych, :class:`FeedbackClient`).

Both bind loopback only: the stimulus program runs on the presentation PC itself.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
import mimetypes
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from rtcontrol.paths import resources_dir
from rtcontrol.subject import protocol as P
from rtcontrol.subject.agent import SubjectAgent
from rtcontrol.subject.consumers import Consumer

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"


def _hello(consumer: Consumer, agent: SubjectAgent) -> list[dict[str, Any]]:
    """What a consumer gets on connecting: its name and the run in progress (if any)."""
    items: list[dict[str, Any]] = [{"type": "hello", "protocol": P.PROTOCOL, "consumer": consumer.name}]
    if agent.current is not None:
        items.append({"type": "run_start", **agent.current.to_consumer()})
    return items


def _handle_line(agent: SubjectAgent, consumer: Consumer, raw: str | bytes) -> None:
    try:
        agent.handle_consumer(consumer, P.decode(raw, f"message from {consumer.name}", P.CONSUMER_TO_AGENT))
    except P.ProtocolError as exc:
        log.warning("%s", exc)
        consumer.queue.put({"type": "error", "message": str(exc)})


# ----------------------------------------------------------------------------------------------- TCP NDJSON


class StreamConsumer(Consumer):
    kind = "tcp"

    def __init__(self, writer: asyncio.StreamWriter, **kw: Any) -> None:
        super().__init__(**kw)
        self.writer = writer

    async def deliver(self, item: dict[str, Any]) -> None:
        self.writer.write(P.encode(item).encode() + b"\n")
        await self.writer.drain()

    def deliver_now(self, item: dict[str, Any]) -> bool:
        transport = self.writer.transport
        if transport.is_closing() or transport.get_write_buffer_size() > 0:
            return False  # something is still waiting to go out: keep the order, use the queue
        transport.write(P.encode(item).encode() + b"\n")
        return True


class TcpServer:
    """The NDJSON server and its open connections (closed cleanly on shutdown)."""

    def __init__(self, agent: SubjectAgent) -> None:
        self.agent = agent
        self.server: asyncio.Server | None = None
        self._clients: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self, port: int, host: str) -> TcpServer:
        self.server = await asyncio.start_server(self._on_client, host, port, limit=P.MAX_FRAME_BYTES)
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self._clients.values():
            writer.transport.abort()  # not close(): a stuck consumer's unsent bytes would hold it open
        if self._clients:
            await asyncio.wait(list(self._clients), timeout=2.0)
        if self.server is not None:
            await self.server.wait_closed()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients[task] = writer
        agent = self.agent
        consumer = StreamConsumer(writer)
        agent.hub.add(consumer, _hello(consumer, agent))
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    break
                except asyncio.LimitOverrunError:
                    consumer.queue.put({"type": "error", "message":
                                        f"line over the {P.MAX_FRAME_BYTES}-byte limit; connection closed"})
                    await asyncio.sleep(0.05)  # let the error go out
                    break
                if line.strip():
                    _handle_line(agent, consumer, line)
        except (ConnectionError, OSError):
            pass
        finally:
            self._clients.pop(task, None)
            agent.hub.remove(consumer)
            writer.close()


async def serve_tcp(agent: SubjectAgent, port: int = 0, host: str = LOOPBACK) -> TcpServer:
    """Newline-delimited JSON consumers on ``host:port`` (port 0 picks a free one)."""
    return await TcpServer(agent).start(port, host)


# ------------------------------------------------------------------------------------- HTTP + websocket


class WebSocketConsumer(Consumer):
    kind = "ws"

    def __init__(self, ws: ServerConnection, **kw: Any) -> None:
        super().__init__(**kw)
        self.ws = ws

    async def deliver(self, item: dict[str, Any]) -> None:
        await self.ws.send(P.encode(item))


def static_roots() -> dict[str, Path]:
    """URL prefix -> folder served over HTTP."""
    return {"/": resources_dir() / "jspsych"}


def _file_response(path: str) -> Response:
    rel = path.split("?", 1)[0]
    if rel in ("", "/"):
        rel = "/index.html"
    root = static_roots()["/"].resolve()
    target = (root / rel.lstrip("/")).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        return _response(http.HTTPStatus.NOT_FOUND, f"not found: {rel}\n".encode(), "text/plain; charset=utf-8")
    ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if ctype.startswith("text/") or ctype in ("application/javascript", "text/javascript"):
        ctype += "; charset=utf-8"
    return _response(http.HTTPStatus.OK, target.read_bytes(), ctype)


def _response(status: http.HTTPStatus, body: bytes, ctype: str) -> Response:
    headers = Headers([
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Length", str(len(body))),
        ("Content-Type", ctype),
        ("Cache-Control", "no-store"),
    ])
    return Response(status.value, status.phrase, headers, body)


async def serve_local(agent: SubjectAgent, port: int = 0, host: str = LOOPBACK) -> Server:
    """The jsPsych page and the local websocket ``/ws`` on ``host:port``."""

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] == "/ws":
            return None  # go on with the websocket handshake
        return _file_response(request.path)

    async def handler(ws: ServerConnection) -> None:
        consumer = WebSocketConsumer(ws)
        agent.hub.add(consumer, _hello(consumer, agent))
        try:
            async for raw in ws:
                _handle_line(agent, consumer, raw)
        except ConnectionClosed:
            pass
        finally:
            agent.hub.remove(consumer)

    return await serve(handler, host, port, process_request=process_request, max_size=P.MAX_FRAME_BYTES,
                       compression=None)
