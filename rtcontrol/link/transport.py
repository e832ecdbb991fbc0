"""The thin asyncio layer: websockets over TLS with pinning, tokens and the loopback rule.

Shared by every link (console -> worker, console -> subject agent). The sequence is:

1. TCP + TLS handshake (``wss://``), or plain ``ws://`` only to a loopback address and only
   when the caller asked for it explicitly.
2. The client checks the server certificate's SHA-256 fingerprint (pinned or expected)
   *before* sending anything secret.
3. The client's first message is ``hello`` with the token. The server answers ``error`` and
   closes (code 4401) on a bad token, and throttles the address (see :func:`serve`: a correct
   token still gets in while an address is locked out).
4. The application takes over with the server's ``welcome``.

Until the hello is verified a connection is held to :class:`PreAuthLimits`: small frames only,
a few at a time per address and in all, a time limit. Connections over the count are refused
before the upgrade with HTTP 429 (this address) or 503 (all addresses) and ``Retry-After``;
:func:`connect` raises :class:`Throttled` for those, and clients wait and try again.

Volumes are binary frames; per-message deflate is off (it costs ~50 ms a volume) and
``max_size`` is set for the largest volume (:data:`DEFAULT_MAX_SIZE`, configurable).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.protocol import State

from rtcontrol.errors import RtcontrolError
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


class LinkError(RtcontrolError, ConnectionError):
    """A link could not be set up; the message says why and what to do."""


class AuthError(LinkError):
    """The peer refused our token: fatal, a reconnect would present the same token."""


class Throttled(LinkError):
    """The server refused the connection for now (HTTP 429/503) and said when to try again."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


#: The longest a client waits on a server's Retry-After before trying again (a lockout may be longer).
MAX_RETRY_WAIT = 30.0
#: A 429 without Retry-After (an older server) is retried after this many seconds.
DEFAULT_RETRY_WAIT = 5.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_plain_allowed(host: str, allow_plain_loopback: bool, who: str) -> None:
    """Plain websockets only on loopback and only when asked: anything that leaves the machine is TLS, so
    tokens and volumes are never readable on the network (docs/architecture.md, decision 5)."""
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


@dataclass(frozen=True)
class PreAuthLimits:
    """What a connection may use before its hello is verified.

    Without these a client that never authenticates could make the server buffer a 64 MiB frame per
    connection (40 connections took a worker to 2.3 GB). A hello is a few hundred bytes.
    """

    max_frame: int = 8192  # larger frames close the connection (1009) as soon as their header arrives
    per_address: int = 8  # unauthenticated connections at once from one address (more: HTTP 429)
    total: int = 64  # ... from all addresses (more: HTTP 503)
    hello_timeout: float = 10.0  # seconds from the upgrade to a valid hello
    retry_after: int = 2  # Retry-After of a refusal: the slots free within hello_timeout at most
    #: during a lockout, the longest a wrong token waits for its refusal (well under a client's 10 s
    #: wait for the answer to its hello, so a console with a wrong token still hears "refused the token")
    wrong_token_delay: float = 5.0


class PreAuthGate:
    """Counts the connections that have not authenticated yet, per address and in total."""

    def __init__(self, limits: PreAuthLimits) -> None:
        self.limits = limits
        self._pending: dict[str, set[ServerConnection]] = {}

    def admit(self, address: str, conn: ServerConnection) -> tuple[HTTPStatus, str] | None:
        """Count ``conn`` in, or say why not (status and reason)."""
        self._prune()
        mine = self._pending.get(address, set())
        total = sum(len(c) for c in self._pending.values())
        if len(mine) >= self.limits.per_address:
            return HTTPStatus.TOO_MANY_REQUESTS, (
                f"{len(mine)} connections from {address} have not authenticated yet (the limit is "
                f"{self.limits.per_address}); try again in {self.limits.retry_after} s")
        if total >= self.limits.total:
            return HTTPStatus.SERVICE_UNAVAILABLE, (
                f"{total} connections have not authenticated yet (the limit is {self.limits.total}); "
                f"try again in {self.limits.retry_after} s")
        self._pending.setdefault(address, set()).add(conn)
        return None

    def done(self, address: str, conn: ServerConnection) -> None:
        mine = self._pending.get(address)
        if mine is not None:
            mine.discard(conn)
            if not mine:
                del self._pending[address]

    def _prune(self) -> None:
        """Forget connections that closed without reaching the handler (a failed handshake)."""
        for address, conns in list(self._pending.items()):
            conns.difference_update([c for c in conns if c.state is State.CLOSED])
            if not conns:
                del self._pending[address]


class _QuietLog:
    """One warning per key every ``every`` seconds, with how many were held back: a flood is not a log flood."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last: dict[str, tuple[float, int]] = {}

    def warning(self, key: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        last, held = self._last.get(key, (-1e9, 0))
        if now - last < self.every:
            self._last[key] = (last, held + 1)
            return
        self._last[key] = (now, 0)
        if len(self._last) > 10_000:  # many addresses: start over rather than grow
            self._last = {key: (now, 0)}
        log.warning(message + (f" (and {held} more like it in the last {self.every:.0f} s)" if held else ""), *args)


async def serve(
    handler: ServerHandler,
    host: str,
    port: int,
    *,
    tokens: TokenStore,
    ssl_context: ssl.SSLContext | None,
    insecure_loopback: bool = False,
    max_size: int = DEFAULT_MAX_SIZE,
    hello_timeout: float | None = None,
    throttle: Throttle | None = None,
    preauth: PreAuthLimits | None = None,
    role: str = "worker",
    ping_interval: float | None = 10.0,
) -> Server:
    """Start a websocket server; ``handler(conn, peer)`` runs for each authenticated client.

    Bad tokens lock an address out (:class:`Throttle`), but a correct token always gets in, even
    from a locked-out address: the address is often shared (a NAT, a proxy, another program on the
    console's machine), and a lockout there must not end the console's reconnection. Tokens are 256
    random bits, so the lockout is not what stops guessing; it slows a program that keeps trying:
    during a lockout the answer to a wrong token waits until the lockout ends (at most
    ``wrong_token_delay``), holding one of the few unauthenticated slots of its address.
    """
    if ssl_context is None:
        check_plain_allowed(host, insecure_loopback, role)
    throttle = throttle or Throttle()
    limits = preauth or PreAuthLimits()
    if hello_timeout is not None:
        limits = dataclasses.replace(limits, hello_timeout=hello_timeout)
    gate = PreAuthGate(limits)
    quiet = _QuietLog()

    def process_request(conn: ServerConnection, request: Any) -> Any:
        address = _address(conn)
        refused = gate.admit(address, conn)
        if refused is None:
            return None
        status, reason = refused
        quiet.warning(f"busy {address}", "%s: refused a connection from %s: %s", role, address, reason)
        response = conn.respond(status, f"the {role} refused the connection: {reason}\n")
        response.headers["Retry-After"] = str(limits.retry_after)
        return response

    def process_response(conn: ServerConnection, request: Any, response: Any) -> None:
        if response.status_code != HTTPStatus.SWITCHING_PROTOCOLS:
            gate.done(_address(conn), conn)  # no handler will run for this one

    async def on_connect(conn: ServerConnection) -> None:
        address = _address(conn)
        try:
            peer = await _authenticate(conn, address)
        finally:
            gate.done(address, conn)
        if peer is not None:
            conn.protocol.max_message_size = max_size  # authenticated: volumes may come now
            await handler(conn, peer)

    async def _authenticate(conn: ServerConnection, address: str) -> Peer | None:
        try:
            raw = await asyncio.wait_for(conn.recv(), limits.hello_timeout)
            hello = decode_message(raw)
            if hello["type"] != "hello":
                raise FrameError(f"the first message must be 'hello', got {hello['type']!r}")
        except (TimeoutError, FrameError) as exc:
            reason = (f"no valid hello within {limits.hello_timeout:.0f} s" if isinstance(exc, TimeoutError)
                      else str(exc))
            quiet.warning(f"hello {address}", "%s: closed a connection from %s before authentication: %s",
                          role, address, reason)
            await _refuse(conn, "protocol", reason, CLOSE_PROTOCOL)
            return None
        except websockets.ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == 1009:  # a frame over the pre-authentication limit
                quiet.warning(f"hello {address}", "%s: closed a connection from %s before authentication: "
                              "a frame over the %d-byte limit for unauthenticated clients", role, address,
                              limits.max_frame)
            return None
        name = tokens.verify(hello.get("token", ""))
        if name is None:
            locked = throttle.locked_for(address)
            if locked:  # slow a program that keeps trying; see serve()'s docstring
                await asyncio.sleep(min(locked, limits.wrong_token_delay))
            wait = throttle.failure(address)
            extra = (f"; wrong tokens from {address} are locked out for {wait:.0f} s (a correct token still gets in)"
                     if wait else "")
            log.warning("%s: bad token from %s%s", role, address, extra and f" (locked out for {wait:.0f} s)")
            await _refuse(conn, "bad_token", f"the {role} refused the token{extra}", CLOSE_BAD_TOKEN)
            return None
        return Peer(address, name, hello)

    return await ws_serve(
        on_connect,
        host,
        port,
        ssl=ssl_context,
        process_request=process_request,
        process_response=process_response,
        compression=None,
        max_size=min(limits.max_frame, max_size),  # raised to max_size once the hello is verified
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
        status = exc.response.status_code
        retry = _retry_after(exc.response.headers.get("Retry-After"))
        if status == HTTPStatus.TOO_MANY_REQUESTS or (status == HTTPStatus.SERVICE_UNAVAILABLE and retry is not None):
            raise Throttled(f"{url}: {body or f'HTTP {status}'}",
                            DEFAULT_RETRY_WAIT if retry is None else retry) from None
        raise LinkError(f"{url}: refused with HTTP {status} {body}") from None
    except (TimeoutError, OSError, websockets.InvalidHandshake) as exc:
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
    except TimeoutError:
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


def _retry_after(value: str | None) -> float | None:
    """Seconds of a Retry-After header (the delay form; an HTTP date is not used by our servers)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class ThrottleNotice:
    """A client's view of :class:`Throttled` refusals: a bounded wait, and one message per episode.

    Waiting is right: the server refuses only for now (too many unauthenticated connections, or an
    older server's lockout of a shared address). The message is said once, not at every attempt;
    :meth:`clear` after a successful connection starts a new episode.
    """

    def __init__(self, who: str, cap: float = MAX_RETRY_WAIT) -> None:
        self.who, self.cap, self.active = who, cap, False

    def wait(self, exc: Throttled) -> tuple[float, str | None]:
        """Seconds to wait before the next attempt, and the message to show (None after the first)."""
        delay = min(self.cap, max(0.2, exc.retry_after))
        message = None if self.active else (
            f"{self.who}: refused for now ({exc}); retrying every {delay:.0f} s until it lets us in")
        self.active = True
        return delay, message

    def clear(self) -> None:
        self.active = False
