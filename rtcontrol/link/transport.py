"""The thin asyncio layer: websockets over TLS with pinning, tokens and the loopback rule.

Shared by every link (console -> worker, console -> subject agent). The sequence is:

1. TCP + TLS handshake (``wss://``), or plain ``ws://`` only to a loopback address and only
   when the caller asked for it explicitly.
2. The client checks the server certificate's SHA-256 fingerprint (pinned or expected)
   *before* sending anything secret.
3. The client's first message is ``hello`` with the token. The server answers ``error`` and
   closes (code 4401) on a bad token, and throttles the address; a locked-out address is
   refused with HTTP 429 before the websocket upgrade.
4. The application takes over with the server's ``welcome``.

Volumes are binary frames; per-message deflate is off (it costs ~50 ms a volume) and
``max_size`` is set for the largest volume (:data:`DEFAULT_MAX_SIZE`, configurable).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve

from rtcontrol.link.certs import fingerprint_der, pinning_client_context
from rtcontrol.link.codec import FrameError, decode_message, encode_message
from rtcontrol.link.pinning import KnownHosts, PinError, check_expected
from rtcontrol.link.tokens import Throttle, TokenStore

log = logging.getLogger(__name__)

#: Largest frame accepted: a 256x256x128 float32 volume is 32 MiB; 64 MiB leaves a margin.
DEFAULT_MAX_SIZE = 64 * 1024 * 1024
CLOSE_BAD_TOKEN = 4401
CLOSE_PROTOCOL = 4400
#: Large frames are handed to TLS in slices of this many bytes (see :class:`SlicedWritesConnection`).
WRITE_SLICE = 256 * 1024


class LinkError(ConnectionError):
    """A link could not be set up; the message says why and what to do."""


class AuthError(LinkError):
    """The peer refused our token (or we are throttled)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_plain_allowed(host: str, allow_plain_loopback: bool, who: str) -> None:
    """Plain websockets only on loopback and only when asked (decision 5)."""
    if not allow_plain_loopback:
        raise LinkError(
            f"{who}: plain ws:// without TLS was not requested; use wss:// with a certificate "
            "(main.py certs), or pass --insecure-loopback on a loopback address"
        )
    if not is_loopback(host):
        raise LinkError(f"{who}: plain ws:// is only allowed on loopback (127.0.0.1/::1), not on {host!r}; use TLS")


# --------------------------------------------------------------------------- server


@dataclass
class Peer:
    """Who is on the other end of an accepted connection."""

    address: str
    token_name: str
    hello: dict[str, Any]


ServerHandler = Callable[[ServerConnection, Peer], Awaitable[None]]


async def serve(
    handler: ServerHandler,
    host: str,
    port: int,
    *,
    tokens: TokenStore,
    ssl_context: ssl.SSLContext | None,
    insecure_loopback: bool = False,
    max_size: int = DEFAULT_MAX_SIZE,
    hello_timeout: float = 10.0,
    throttle: Throttle | None = None,
    role: str = "worker",
    ping_interval: float | None = 10.0,
) -> Server:
    """Start a websocket server; ``handler(conn, peer)`` runs for each authenticated client."""
    if ssl_context is None:
        check_plain_allowed(host, insecure_loopback, role)
    throttle = throttle or Throttle()

    def process_request(conn: ServerConnection, request: Any) -> Any:
        address = _address(conn)
        wait = throttle.locked_for(address)
        if wait > 0:
            return conn.respond(
                HTTPStatus.TOO_MANY_REQUESTS,
                f"too many bad tokens from {address}; try again in {wait:.0f} s\n",
            )
        return None

    async def on_connect(conn: ServerConnection) -> None:
        address = _address(conn)
        try:
            raw = await asyncio.wait_for(conn.recv(), hello_timeout)
            hello = decode_message(raw)
            if hello["type"] != "hello":
                raise FrameError(f"the first message must be 'hello', got {hello['type']!r}")
        except (asyncio.TimeoutError, FrameError) as exc:
            reason = f"no valid hello within {hello_timeout:.0f} s" if isinstance(exc, asyncio.TimeoutError) else str(exc)
            await _refuse(conn, "protocol", reason, CLOSE_PROTOCOL)
            return
        except websockets.ConnectionClosed:
            return
        name = tokens.verify(hello.get("token", ""))
        if name is None:
            wait = throttle.failure(address)
            log.warning("%s: bad token from %s (lockout %.0f s)", role, address, wait)
            extra = f"; further attempts from {address} are blocked for {wait:.0f} s" if wait else ""
            await _refuse(conn, "bad_token", f"the {role} refused the token{extra}", CLOSE_BAD_TOKEN)
            return
        throttle.success(address)
        await handler(conn, Peer(address, name, hello))

    return await ws_serve(
        on_connect,
        host,
        port,
        ssl=ssl_context,
        process_request=process_request,
        compression=None,
        max_size=max_size,
        ping_interval=ping_interval,
        ping_timeout=ping_interval,
        server_header=f"rtcontrol-{role}",
    )


async def _refuse(conn: ServerConnection, code: str, message: str, close_code: int) -> None:
    try:
        await conn.send(encode_message("error", code=code, message=message))
        await conn.close(close_code, message[:120])
    except websockets.ConnectionClosed:
        pass


def _address(conn: ServerConnection) -> str:
    addr = conn.remote_address
    return str(addr[0]) if addr else "?"


def bound_port(server: Server) -> int:
    """The TCP port a server listens on (after binding port 0)."""
    for sock in server.sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            return int(sock.getsockname()[1])
    raise LinkError("the server has no TCP socket")


# --------------------------------------------------------------------------- client


class SlicedWritesConnection(ClientConnection):
    """A client connection that hands a large frame to the transport in slices.

    websockets writes a whole frame at once; over TLS that means encrypting all of a 1.2 MB
    volume before its first byte reaches the socket, while the peer waits. In slices of
    :data:`WRITE_SLICE` each slice is encrypted and sent at once, so the peer decrypts the first
    slice while this side encrypts the next: the same bytes and the same single frame, sooner.
    """

    def send_data(self) -> None:
        for data in self.protocol.data_to_send():
            if not data:  # end of stream: websockets' own handling (close the TLS transport)
                self._send_eof()
            elif len(data) <= WRITE_SLICE:
                self.transport.write(data)
            else:
                view = memoryview(data)
                for start in range(0, len(view), WRITE_SLICE):
                    self.transport.write(view[start : start + WRITE_SLICE])

    def _send_eof(self) -> None:
        if self.transport.can_write_eof():
            try:
                self.transport.write_eof()
            except Exception:  # as websockets does: write_eof() may raise OSError or RuntimeError
                pass
        else:
            self.transport.close()


@dataclass
class Connected:
    conn: ClientConnection
    welcome: dict[str, Any]
    fingerprint: str | None  # None on a plain loopback link


async def connect(
    url: str,
    *,
    token: str,
    hello: dict[str, Any] | None = None,
    pins: KnownHosts | None = None,
    expected_fingerprint: str | None = None,
    allow_plain_loopback: bool = False,
    max_size: int = DEFAULT_MAX_SIZE,
    open_timeout: float = 10.0,
    ping_interval: float | None = 10.0,
) -> Connected:
    """Open, verify and authenticate a link; raises :class:`LinkError`, :class:`PinError`, :class:`AuthError`."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise LinkError(f"{url!r} is not a ws:// or wss:// address")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    ssl_ctx: ssl.SSLContext | None = None
    if parts.scheme == "ws":
        check_plain_allowed(host, allow_plain_loopback, url)
    else:
        ssl_ctx = pinning_client_context()
    try:
        conn = await ws_connect(
            url,
            ssl=ssl_ctx,
            create_connection=SlicedWritesConnection,
            compression=None,
            max_size=max_size,
            proxy=None,
            open_timeout=open_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_interval,
            user_agent_header="rtcontrol",
        )
    except websockets.InvalidStatus as exc:
        body = (exc.response.body or b"").decode(errors="replace").strip()
        if exc.response.status_code == HTTPStatus.TOO_MANY_REQUESTS:
            raise AuthError(f"{url}: {body or 'throttled after bad tokens'}") from None
        raise LinkError(f"{url}: refused with HTTP {exc.response.status_code} {body}") from None
    except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake) as exc:
        raise LinkError(f"cannot connect to {url}: {exc or type(exc).__name__}") from None
    fingerprint = None
    try:
        if ssl_ctx is not None:
            ssl_obj = conn.transport.get_extra_info("ssl_object")
            der = ssl_obj.getpeercert(binary_form=True) if ssl_obj else None
            if not der:
                raise PinError(f"REFUSED: {url} presented no certificate")
            fingerprint = fingerprint_der(der)
            peer = f"{host}:{port}"
            if expected_fingerprint:
                await check_expected(peer, fingerprint, expected_fingerprint)
            else:
                await (pins or KnownHosts()).verify(peer, fingerprint)
        # Only now, with the peer verified, does the token leave this machine.
        await conn.send(encode_message("hello", token=token, **(hello or {})))
        raw = await asyncio.wait_for(conn.recv(), open_timeout)
        welcome = decode_message(raw)
    except websockets.ConnectionClosed as exc:
        await conn.close()
        raise LinkError(f"{url} closed the link during the handshake: {exc}") from None
    except asyncio.TimeoutError:
        await conn.close()
        raise LinkError(f"{url} did not answer the hello within {open_timeout:.0f} s") from None
    except BaseException:
        await conn.close()
        raise
    if welcome["type"] == "error":
        await conn.close()
        cls = AuthError if welcome.get("code") == "bad_token" else LinkError
        raise cls(f"{url}: {welcome.get('message', 'refused')}")
    if welcome["type"] != "welcome":
        await conn.close()
        raise LinkError(f"{url}: expected 'welcome', got {welcome['type']!r}")
    return Connected(conn, welcome, fingerprint)
