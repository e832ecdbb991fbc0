"""Framing between the worker and a run process (our own two processes, no pickle).

Each frame is ``kind (1 byte) | length (4 bytes, little-endian) | payload``; kind ``J`` is a
UTF-8 JSON object, kind ``V`` a volume frame exactly as it came off the wire
(:mod:`rtcontrol.link.codec`), so a volume crosses the process boundary without re-encoding; kind ``M``
(run -> worker) a statistical map frame as the console will get it (:func:`rtcontrol.link.codec.encode_map`).

On Linux a volume goes through :class:`SharedFrame` instead (an anonymous ``memfd`` mapped by
both processes; the pipe carries only ``{"k": "shm_volume", "n": bytes}``): writing 1.2 MB into
a pipe cost ~1 ms of the worker's loop, a memcpy into shared memory ~0.1 ms. One slot is
enough because the worker sends the next volume only after the result of the previous one,
and the run process copies the array out before calling the project.
"""

from __future__ import annotations

import asyncio
import json
import mmap
import os
import struct
from typing import Any, BinaryIO

HEAD = struct.Struct("<cI")
JSON, VOLUME, MAP = b"J", b"V", b"M"
#: Statistical maps a project may return with one volume (the rest are left out, said once).
MAX_MAPS = 4


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

    def send_bytes(self, kind: bytes, payload: bytes) -> None:
        """A binary frame (``MAP``); flushed with the next :meth:`send`."""
        self.wfile.write(HEAD.pack(kind, len(payload)))
        self.wfile.write(payload)

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


class SharedFrame:
    """An anonymous shared-memory slot (``memfd``) inherited by the run process by fd number."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size
        self.map = mmap.mmap(fd, size)

    @staticmethod
    def available() -> bool:
        return hasattr(os, "memfd_create")

    @classmethod
    def create(cls, size: int) -> SharedFrame:
        fd = os.memfd_create("rtcontrol-volume", 0)  # pages are allocated only when touched
        os.ftruncate(fd, size)
        return cls(fd, size)

    def put(self, frame: bytes | memoryview) -> None:
        n = memoryview(frame).nbytes
        if n > self.size:
            raise ValueError(f"a {n}-byte frame does not fit the {self.size}-byte shared slot")
        self.map[:n] = frame

    def view(self, n: int) -> memoryview:
        return memoryview(self.map)[:n]

    def close(self) -> None:
        try:
            self.map.close()
        except BufferError:  # a view is still alive; the mapping goes with the process
            pass
        os.close(self.fd)
