"""What a hostile or careless program on the network or on the presentation PC does; every loop bounded.

* :func:`bad_tokens`: clients that say hello with a wrong token (from the console's own address).
* :func:`flood`: many connections that never authenticate and send one large frame each.
* :func:`inject_ndjson`, :func:`inject_websocket`: a local program without the consumer secret that says
  hello as a display and sends responses and "displayed" stamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from typing import Any

from websockets.asyncio.client import connect

from rtcontrol.link.codec import encode_message

from .procs import HOST


def _no_verify() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def bad_tokens(url: str, refusals: int, limit: float = 20.0, timeout: float = 5.0) -> list[str]:
    """Clients in turn, each saying hello with the same wrong token (a program with a stale token behind the
    console's NAT), until the server has refused ``refusals`` of them (a locked-out attempt, HTTP 429, is
    retried 0.25 s later and not counted) or ``limit`` s passed; what the server answered each."""
    answers: list[str] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while sum("refused the token" in a for a in answers) < refusals and loop.time() < end and len(answers) < 200:
        try:
            async with asyncio.timeout(timeout):
                async with connect(url, ssl=_no_verify(), open_timeout=timeout, compression=None) as ws:
                    await ws.send(encode_message("hello", token="rtc_stale_token_of_another_program"))
                    answers.append(str(await ws.recv()))
        except Exception as exc:  # refused at the handshake (locked out) or closed: that is an answer too
            answers.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.25)
    return answers


async def flood(url: str, connections: int, frame_bytes: int, hold: float = 3.0,
                timeout: float = 20.0) -> dict[str, int]:
    """``connections`` clients at once, each sending one ``frame_bytes`` binary frame before any hello and
    holding on for ``hold`` s; counts of how they ended."""
    outcome: dict[str, int] = {}
    frame = bytes(frame_bytes)

    async def one() -> str:
        try:
            async with asyncio.timeout(timeout):
                async with connect(url, ssl=_no_verify(), open_timeout=timeout, compression=None,
                                   max_size=None, ping_interval=None) as ws:
                    await ws.send(frame)
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(ws.recv(), hold)
                    return "held"
        except Exception as exc:
            return type(exc).__name__

    for result in await asyncio.gather(*(one() for _ in range(connections))):
        outcome[result] = outcome.get(result, 0) + 1
    return outcome


async def inject_ndjson(port: int, messages: list[dict[str, Any]], wait: float = 1.0) -> list[str]:
    """A local program with no secret: hello as a display, then ``messages``; the lines it got back."""
    got: list[str] = []
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5)
    except (TimeoutError, OSError) as exc:
        return [f"refused: {exc}"]
    try:
        for msg in [{"type": "hello", "name": "display"}, *messages]:
            writer.write(json.dumps(msg).encode() + b"\n")
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()
        loop = asyncio.get_running_loop()
        end = loop.time() + wait
        while (left := end - loop.time()) > 0:
            try:
                line = await asyncio.wait_for(reader.readline(), left)
            except (TimeoutError, ConnectionError, OSError):
                break
            if not line:
                got.append("closed")
                break
            got.append(line.decode(errors="replace").strip())
    finally:
        writer.transport.abort()
    return got


async def inject_websocket(port: int, messages: list[dict[str, Any]], origin: str | None,
                           wait: float = 1.0) -> list[str]:
    """The same over the page's websocket ``/ws``, as a web page from ``origin`` (None: no Origin header)."""
    got: list[str] = []
    try:
        async with asyncio.timeout(wait + 5):
            async with connect(f"ws://{HOST}:{port}/ws", origin=origin, open_timeout=5,  # type: ignore[arg-type]
                               compression=None) as ws:
                for msg in [{"type": "hello", "name": "display"}, *messages]:
                    await ws.send(json.dumps(msg))
                with contextlib.suppress(asyncio.TimeoutError):
                    while True:
                        got.append(str(await asyncio.wait_for(ws.recv(), wait)))
    except Exception as exc:
        got.append(f"{type(exc).__name__}: {exc}")
    return got


async def deep_json_websocket(url: str, depth: int, timeout: float = 5.0) -> str:
    """A first frame of ``depth`` nested JSON lists instead of a hello; how the server answered."""
    try:
        async with asyncio.timeout(timeout):
            async with connect(url, ssl=_no_verify() if url.startswith("wss") else None, open_timeout=timeout,
                               compression=None) as ws:
                await ws.send("[" * depth + "]" * depth)
                return str(await ws.recv())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


async def deep_json_ndjson(port: int, depth: int, secret: str | None, timeout: float = 5.0) -> str:
    """One NDJSON line of ``depth`` nested lists after a hello (with the secret: a real but buggy stimulus
    program); every line that came back, up to the first error."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(HOST, port)
            try:
                hello = {"type": "hello", "name": "nested", **({"secret": secret} if secret is not None else {})}
                writer.write(json.dumps(hello).encode() + b"\n" + b"[" * depth + b"]" * depth + b"\n")
                await writer.drain()
                lines = []
                while line := await reader.readline():
                    lines.append(line.decode(errors="replace").strip())
                    if '"error"' in lines[-1]:
                        break
                return "\n".join(lines) or "closed without a word"
            finally:
                writer.transport.abort()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
