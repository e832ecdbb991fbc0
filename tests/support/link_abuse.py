"""What an attacker on the console's network does, for tests: wrong tokens, unauthenticated floods.

Loopback only; every helper is bounded in count, size and time.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from pathlib import Path

import pytest

from rtcontrol.link import transport


def insecure_context() -> ssl.SSLContext:
    """TLS without checking the server: an attacker does not care whose certificate it is."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


async def bad_tokens(url: str, fingerprint: str, n: int) -> list[str]:
    """``n`` logins with a wrong token from this machine's address (another program, a NAT)."""
    messages = []
    for _ in range(n):
        with pytest.raises(transport.AuthError) as info:
            await transport.connect(url, token="rtc_not-the-token", expected_fingerprint=fingerprint)
        messages.append(str(info.value))
    return messages


def rss(pid: int) -> int:
    """Resident memory of a process in bytes, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


async def flood_one(port: int, source: str, frame: int, total: int, timeout: float = 10.0) -> str:
    """Upgrade to a websocket without a hello, then stream binary frames of ``frame`` bytes (``total`` in all).

    Frames are written in 1 MiB pieces (masked with a zero key), so this side holds no more than that.
    Returns how it ended: ``"sent all"`` means the server took everything without closing.
    """
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, ssl=insecure_context(), local_addr=(source, 0)), timeout)
    except (TimeoutError, OSError) as exc:
        return f"connect: {type(exc).__name__}"
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = head.split(b"\r\n")[0].decode()
        if " 101 " not in status:
            return status
        piece = b"\0" * min(frame, 1 << 20)
        sent = 0
        while sent < total:
            writer.write(b"\x82\xff" + struct.pack(">Q", frame) + b"\0\0\0\0")
            left = frame
            while left > 0:
                writer.write(piece[:left])
                await asyncio.wait_for(writer.drain(), timeout)
                left -= len(piece)
            sent += frame
        return "sent all"
    except (TimeoutError, ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
        return f"closed: {type(exc).__name__}"
    finally:
        writer.transport.abort()
