"""AFNI's reverse channel (``AFNI_REALTIME_MP_HOST_PORT``): motion estimates and ROI data per TR.

AFNI connects to us once per run (spec section 12) and sends: a hello ``AB CD EF xx``
(``xx = 0xAB + version``), for versions >= 1 the int32 counts, then per TR ``6 + extras``
float32 values (ΔI-S, ΔR-L, ΔA-P mm; roll, pitch, yaw degrees; then ROI means or voxel
values), and ``DE AD DE AD`` at the end of the run. Native byte order (little-endian on the
x86 machines AFNI runs on). :class:`MotionStreamParser` is the pure part (bytes in, events
out); :class:`MotionReceiver` is the asyncio server.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rtcontrol.errors import RtcontrolError

HELLO = b"\xab\xcd\xef"
BYE = b"\xde\xad\xde\xad"
DEFAULT_PORT = 53214  # realtime_receiver.py's default (RT_MP_DEF_PORT)
MOTION_LABELS = ("dS (mm)", "dL (mm)", "dP (mm)", "roll (deg)", "pitch (deg)", "yaw (deg)")


class MotionStreamError(RtcontrolError, ValueError):
    """The reverse-channel bytes do not follow AFNI's format (says where)."""


@dataclass(frozen=True)
class MotionHello:
    version: int
    nextra: int = 0
    nextra2: int = 0

    @property
    def floats_per_tr(self) -> int:
        if self.version == 2:
            return 6 + 8 * self.nextra
        if self.version == 4:
            return 6 + self.nextra + self.nextra2
        return 6 + self.nextra


@dataclass(frozen=True)
class MotionRecord:
    """One TR of AFNI's realtime registration (and ROI/voxel data, by version)."""

    tr_index: int
    motion: tuple[float, float, float, float, float, float]  # dI-S, dR-L, dA-P mm; roll, pitch, yaw deg
    extras: tuple[float, ...] = ()  # v1: ROI means 1..N; v2: 8 per voxel; v3: voxel values; v4: ROIs then voxels

    @property
    def values(self) -> tuple[float, ...]:
        return self.motion + self.extras


@dataclass(frozen=True)
class MotionBye:
    records: int


MotionEvent = MotionHello | MotionRecord | MotionBye


class MotionStreamParser:
    """Feed it bytes as they arrive; it returns hello / per-TR records / bye."""

    def __init__(self, byteorder: str = "<") -> None:
        self._order = byteorder
        self._buf = bytearray()
        self.hello: MotionHello | None = None
        self.records = 0
        self.finished = False
        self._offset = 0  # stream position of _buf[0], for error messages

    def feed(self, data: bytes) -> list[MotionEvent]:
        if self.finished and data:
            raise MotionStreamError(f"{len(data)} bytes after AFNI's end marker")
        self._buf += data
        events: list[MotionEvent] = []
        while True:
            event = self._next()
            if event is None:
                return events
            events.append(event)

    def _take(self, n: int) -> bytes:
        out = bytes(self._buf[:n])
        del self._buf[:n]
        self._offset += n
        return out

    def _next(self) -> MotionEvent | None:
        if self.finished:
            return None
        if self.hello is None:
            if len(self._buf) < 4:
                return None
            if self._buf[:3] != HELLO or not 0 <= self._buf[3] - 0xAB <= 4:
                raise MotionStreamError(f"bad hello {bytes(self._buf[:4]).hex()} at byte {self._offset}")
            version = self._buf[3] - 0xAB
            ncounts = {0: 0, 4: 2}.get(version, 1)
            if len(self._buf) < 4 + 4 * ncounts:
                return None
            self._take(4)
            counts = struct.unpack(f"{self._order}{ncounts}i", self._take(4 * ncounts)) if ncounts else ()
            if any(c < 0 for c in counts):
                raise MotionStreamError(f"negative count in hello: {counts}")
            self.hello = MotionHello(version, *counts)
            return self.hello
        if len(self._buf) >= 4 and self._buf[:4] == BYE:
            self._take(4)
            self.finished = True
            return MotionBye(self.records)
        size = 4 * self.hello.floats_per_tr
        if len(self._buf) < size:
            return None
        values = np.frombuffer(self._take(size), dtype=f"{self._order}f4").astype(float)
        record = MotionRecord(self.records, tuple(values[:6]), tuple(values[6:]))
        self.records += 1
        return record


class MotionReceiver:
    """TCP server AFNI connects to; calls ``on_event`` for every hello, record and bye."""

    def __init__(
        self,
        on_event: Callable[[MotionEvent], None],
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self._on_event, self._on_error = on_event, on_error
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task] = set()

    @property
    def bound_port(self) -> int | None:
        if self._server is None or not self._server.sockets:
            return None
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        return self.bound_port or self.port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task:
            self._conns.add(task)
        parser = MotionStreamParser()
        try:
            while not parser.finished:
                data = await reader.read(65536)
                if not data:
                    break
                for event in parser.feed(data):
                    self._on_event(event)
        except MotionStreamError as exc:
            if self._on_error:
                self._on_error(f"AFNI motion channel: {exc}")
        except (ConnectionError, OSError) as exc:
            if self._on_error:
                self._on_error(f"AFNI motion channel lost: {exc}")
        finally:
            if task:
                self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
