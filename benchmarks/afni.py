"""AFNI sender cost per volume: 96x96x66 int16 over loopback TCP to a receiver that reads like AFNI.

* ``afni_added``: what the caller (the console's scanner path) pays: ``AfniSender.submit``.
* ``afni_wire``: from ``submit`` until the receiver (another thread, blocking sockets, as
  plug_realtime) holds the whole image: encoding (x-fastest int16) plus the socket.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterable

import numpy as np

from benchmarks.stats import Figure, timing
from rtcontrol.afni.channel import ChannelSettings
from rtcontrol.afni.sender import AfniSender, SenderSettings
from rtcontrol.scanner.volume import Volume

SHAPE = (96, 96, 66)
VOLUMES = 60
WARMUP = 3
GAP_S = 0.04  # volumes arrive far slower in a scan (TR); keep them apart so each is measured alone


class _Receiver(threading.Thread):
    """Control to EOF, then the named data port, header to NUL, whole images; stamps each image."""

    def __init__(self, imsize: int) -> None:
        super().__init__(daemon=True)
        self.imsize = imsize
        self.control = socket.create_server(("127.0.0.1", 0))
        self.port = self.control.getsockname()[1]
        self.times: list[float] = []
        self.error = ""

    def run(self) -> None:
        try:
            self.control.settimeout(20)
            conn, _ = self.control.accept()
            spec = b""
            while chunk := conn.recv(256):
                spec += chunk
            conn.close()
            port = int(spec.split(b"\0")[0].decode().rsplit(":", 1)[1])
            with socket.create_server(("127.0.0.1", port)) as listener:
                listener.settimeout(20)
                data, _ = listener.accept()
            data.settimeout(20)
            buf = bytearray()
            while b"\0" not in buf:
                buf += data.recv(65536)
            buf = buf[buf.index(b"\0") + 1 :]
            view = memoryview(bytearray(self.imsize))
            have = len(buf)
            view[:have] = buf
            while True:
                n = data.recv_into(view[have:], self.imsize - have)
                if n == 0:
                    return
                have += n
                if have == self.imsize:
                    self.times.append(time.perf_counter())
                    have = 0
        except Exception as exc:  # reported in the figure
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.control.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _measure() -> tuple[list[float], list[float], str]:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4000, size=SHAPE, dtype=np.int16)
    affine = np.diag([2.5, 2.5, 2.5, 1.0])
    receiver = _Receiver(int(np.prod(SHAPE)) * 2)
    receiver.start()
    settings = SenderSettings(
        channel=ChannelSettings(host="127.0.0.1", control_port=receiver.port, data_port=_free_port()),
        header_pause=0.0,
    )
    sender = AfniSender(settings)
    await sender.start()
    submitted: list[float] = []
    added: list[float] = []
    for i in range(VOLUMES):
        volume = Volume(data, affine, run="bench", index=i, tr=1.0)
        t0 = time.perf_counter()
        sender.submit(volume)
        added.append(time.perf_counter() - t0)
        submitted.append(t0)
        await asyncio.sleep(GAP_S)
    deadline = time.monotonic() + 10
    while len(receiver.times) < VOLUMES and time.monotonic() < deadline and not receiver.error:
        await asyncio.sleep(0.01)
    await sender.close()
    receiver.join(5)
    wire = [t - s for s, t in zip(submitted, receiver.times)]
    return added[WARMUP:], wire[WARMUP:], receiver.error


def bench() -> Iterable[Figure]:
    added, wire, error = asyncio.run(_measure())
    note = f"{SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} int16, loopback TCP"
    if error:
        note += f"; receiver error {error}"
    yield timing("afni_added", added, note + ", caller-side submit()")
    yield timing("afni_wire", wire, note + ", submit -> image fully received")
