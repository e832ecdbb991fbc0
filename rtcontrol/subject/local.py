"""Local consumer servers on 127.0.0.1: NDJSON over TCP, and HTTP + websocket for browsers and Python.

* ``--tcp-port``: one JSON object per line each way (PsychToolbox/MATLAB, anything with a socket).
* ``--local-port``: ``GET /`` serves the jsPsych page and plugin from ``resources/jspsych``; ``/ws`` is a
  websocket that pushes the same JSON objects as text frames (jsPsych, :class:`FeedbackClient`).

Both bind loopback only: the stimulus program runs on the presentation PC itself. Loopback is not a
boundary between programs on that PC, so a connection joins only after a first ``hello`` carrying the
agent's consumer secret (:mod:`rtcontrol.subject.secret`); until then it gets nothing and nothing it sends
is believed. The websocket also refuses browsers on any page but the agent's own (``Origin``).
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
import mimetypes
from pathlib import Path
from typing import Any
from urllib.parse import quote

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from rtcontrol.paths import resources_dir
from rtcontrol.subject import protocol as P
from rtcontrol.subject import secret as S
from rtcontrol.subject.agent import SubjectAgent
from rtcontrol.subject.consumers import Consumer

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"
#: A connection that has not said a valid hello within this time is closed.
HELLO_TIMEOUT_S = 10.0


def _hello(consumer: Consumer, agent: SubjectAgent) -> list[dict[str, Any]]:
    """What a consumer gets on joining: its name and the run in progress (if any)."""
    items: list[dict[str, Any]] = [{"type": "hello", "protocol": P.PROTOCOL, "consumer": consumer.name}]
    if agent.current is not None:
        items.append({"type": "run_start", **agent.current.to_consumer()})
    return items


def authenticate(consumer: Consumer, raw: str | bytes, secret: str) -> None:
    """Check a connection's first line; names the consumer, or raises :class:`P.ProtocolError`."""
    name, given = P.parse_consumer_hello(raw, f"{consumer.kind} connection")
    if not S.matches(given, secret):
        raise P.ProtocolError(f"{consumer.kind} connection: wrong consumer secret; {P.HELLO_HINT}")
    if name:
        consumer.name = f"{name}-{consumer.name.rsplit('-', 1)[-1]}"


def _refused(consumer: Consumer, exc: Exception) -> dict[str, Any]:
    log.warning("refused a local consumer: %s", exc)
    return {"type": "error", "message": f"{exc}; connection closed"}


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

    def __init__(self, agent: SubjectAgent, secret: str) -> None:
        self.agent = agent
        self.secret = secret
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
        joined = False
        try:
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\n"), HELLO_TIMEOUT_S)
                authenticate(consumer, line, self.secret)
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, P.ProtocolError) as exc:
                if isinstance(exc, asyncio.IncompleteReadError):
                    return  # closed without a word
                if isinstance(exc, TimeoutError):
                    exc = P.ProtocolError(f"no hello within {HELLO_TIMEOUT_S:g} s; {P.HELLO_HINT}")
                elif isinstance(exc, asyncio.LimitOverrunError):
                    exc = P.ProtocolError(f"a first line over {P.MAX_FRAME_BYTES} bytes; {P.HELLO_HINT}")
                writer.write(P.encode(_refused(consumer, exc)).encode() + b"\n")
                await asyncio.wait_for(writer.drain(), 2.0)
                await _close_gently(reader, writer)
                return
            agent.hub.add(consumer, _hello(consumer, agent))
            joined = True
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    break
                except asyncio.LimitOverrunError:
                    consumer.queue.put({"type": "error", "message":
                                        f"line over the {P.MAX_FRAME_BYTES}-byte limit; connection closed"})
                    await asyncio.sleep(0.05)  # let the error go out
                    await _close_gently(reader, writer)
                    break
                if line.strip():
                    _handle_line(agent, consumer, line)
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            self._clients.pop(task, None)
            if joined:
                agent.hub.remove(consumer)
            writer.close()


async def _close_gently(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """End our side after the error, then skip what the peer still sends (briefly): closing with unread
    input would reset the connection and the peer might never read the error."""
    if writer.can_write_eof():
        writer.write_eof()
    try:
        async with asyncio.timeout(1.0):
            while await reader.read(65536):
                pass
    except (TimeoutError, ConnectionError, OSError):
        pass


async def serve_tcp(agent: SubjectAgent, port: int = 0, host: str = LOOPBACK, *, secret: str) -> TcpServer:
    """Newline-delimited JSON consumers on ``host:port`` (port 0 picks a free one)."""
    return await TcpServer(agent, secret).start(port, host)


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
        ("Referrer-Policy", "no-referrer"),  # the page's URL carries the consumer secret
    ])
    return Response(status.value, status.phrase, headers, body)


def page_url(port: int, secret: str) -> str:
    """The jsPsych page's address; the page passes the secret on in its websocket hello."""
    return f"http://127.0.0.1:{port}/?secret={quote(secret, safe='')}"


def origin_allowed(origin: str | None, port: int) -> bool:
    """Only the agent's own page (or a client that is not a browser and sends no Origin) may open /ws."""
    return origin is None or origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}")


async def serve_local(agent: SubjectAgent, port: int = 0, host: str = LOOPBACK, *, secret: str) -> Server:
    """The jsPsych page and the local websocket ``/ws`` on ``host:port``."""

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] == "/ws":
            origin = request.headers.get("Origin")
            own = int(connection.local_address[1])
            if not origin_allowed(origin, own):
                log.warning("refused a websocket from a page at %r", origin)
                return _response(http.HTTPStatus.FORBIDDEN,
                                 f"websocket refused: a page at {origin} may not connect; only the agent's own "
                                 f"page http://127.0.0.1:{own}/ may\n".encode(), "text/plain; charset=utf-8")
            return None  # go on with the websocket handshake
        return _file_response(request.path)

    async def handler(ws: ServerConnection) -> None:
        consumer = WebSocketConsumer(ws)
        try:
            first = await asyncio.wait_for(ws.recv(), HELLO_TIMEOUT_S)
            authenticate(consumer, first, secret)
        except (TimeoutError, P.ProtocolError) as exc:
            if isinstance(exc, TimeoutError):
                exc = P.ProtocolError(f"no hello within {HELLO_TIMEOUT_S:g} s; {P.HELLO_HINT}")
            try:
                await ws.send(P.encode(_refused(consumer, exc)))
                await ws.close(1008, "refused: no valid hello with the consumer secret")
            except ConnectionClosed:
                pass
            return
        except ConnectionClosed:
            return
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
