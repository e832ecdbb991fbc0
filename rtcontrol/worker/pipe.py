"""Framing between the worker and a run process (our own two processes, no pickle).

Each frame is ``kind (1 byte) | length (4 bytes, little-endian) | payload``; kind ``J`` is a
UTF-8 JSON object, kind ``V`` a volume frame exactly as it came off the wire
(:mod:`rtcontrol.link.codec`), so a volume crosses the process boundary without re-encoding.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any, BinaryIO

HEAD = struct.Struct("<cI")
JSON, VOLUME = b"J", b"V"


def pack_json(obj: dict[str, Any]) -> bytes:
    body = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    return HEAD.pack(JSON, len(body)) + body


def volume_head(nbytes: int) -> bytes:
    return HEAD.pack(VOLUME, nbytes)


class SyncChannel:
    """The run process's end: blocking reads from stdin, writes to the protocol fd."""

    def __init__(self, rfile: BinaryIO, wfile: BinaryIO) -> None:
        self.rfile, self.wfile = rfile, wfile

    def send(self, obj: dict[str, Any]) -> None:
        self.wfile.write(pack_json(obj))
        self.wfile.flush()

    def recv(self) -> tuple[bytes, bytes | dict[str, Any]] | None:
        """``(kind, payload)``; None at end of input."""
        head = self.rfile.read(HEAD.size)
        if len(head) < HEAD.size:
            return None
        kind, n = HEAD.unpack(head)
        payload = self.rfile.read(n)
        if len(payload) < n:
            return None
        return (kind, json.loads(payload)) if kind == JSON else (kind, payload)


async def read_frame(reader: asyncio.StreamReader) -> tuple[bytes, bytes | dict[str, Any]] | None:
    """The worker's end: one frame from the run process, None at EOF."""
    try:
        head = await reader.readexactly(HEAD.size)
        kind, n = HEAD.unpack(head)
        payload = await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        return None
    return (kind, json.loads(payload)) if kind == JSON else (kind, payload)
