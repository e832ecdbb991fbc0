"""Opening AFNI's channels with asyncio: control string, then the TCP or shm data channel.

Follows the spec's checklist (section 15, steps 1-3 and the shm variant of section 4): connect
to the control port, send ``<data spec>\\0``, close; then connect to the data port (retrying
every 10 ms while AFNI starts listening) or wait for AFNI to attach to our shm segment.
Every wait is bounded; failures raise :class:`AfniUnavailable` with a message for the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from rtcontrol.afni import protocol
from rtcontrol.afni.shm import ShmError, ShmWriter
from rtcontrol.errors import RtcontrolError


class AfniUnavailable(RtcontrolError, ConnectionError):
    """AFNI could not be reached or did not follow the handshake (the message says which)."""


@dataclass(frozen=True)
class ChannelSettings:
    host: str = "127.0.0.1"
    control_port: int = protocol.DEFAULT_CONTROL_PORT
    data_port: int = protocol.DEFAULT_DATA_PORT
    shm_name: str | None = None  # use ``shm:NAME:SIZE`` instead of TCP (AFNI on this machine)
    shm_size: int = 1024 * 1024
    port_offset: int = 0  # AFNI_PORT_OFFSET of the receiving AFNI, for the shm key
    connect_timeout: float = 2.0  # control connection
    data_timeout: float = 3.0  # AFNI opening the data port / attaching to the segment
    send_timeout: float = 10.0  # one image; longer means AFNI is stuck

    def data_spec(self) -> str:
        if self.shm_name:
            return protocol.shm_spec(self.shm_name, self.shm_size)
        return protocol.tcp_spec(self.host, self.data_port)

    def describe(self) -> str:
        data = f"shm:{self.shm_name}" if self.shm_name else f"data port {self.data_port}"
        return f"{self.host} control port {self.control_port}, {data}"


class DataChannel:
    """The open data channel: send bytes, notice a drop, close."""

    description = ""

    @property
    def alive(self) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    async def send(self, payload: bytes, whole: bool = False) -> None:  # pragma: no cover - interface
        """Write all of ``payload``; ``whole``: in one piece (the metadata block, AFNI's 1 ms rule)."""
        raise NotImplementedError

    async def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class TcpDataChannel(DataChannel):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, description: str) -> None:
        self._reader, self._writer = reader, writer
        self.description = description
        self._dropped: str | None = None
        # AFNI never writes on the data channel: readable means it closed or reset it.
        self._watch = asyncio.get_running_loop().create_task(self._watch_peer())

    async def _watch_peer(self) -> None:
        try:
            data = await self._reader.read(1)
            self._dropped = "AFNI closed the data connection" if not data else "AFNI sent unexpected data"
        except (ConnectionError, OSError) as exc:
            self._dropped = f"data connection lost: {exc}"

    @property
    def alive(self) -> bool:
        return self._dropped is None and not self._writer.is_closing()

    async def send(self, payload: bytes, whole: bool = False) -> None:
        if self._dropped:
            raise ConnectionResetError(self._dropped)
        if whole:
            await self._writer.drain()  # nothing of ours queued in front of it
        self._writer.write(payload)  # one send() when the socket buffer has room
        await self._writer.drain()

    async def close(self) -> None:
        self._watch.cancel()
        with contextlib.suppress(Exception):
            if self._writer.can_write_eof():
                self._writer.write_eof()  # orderly FIN after everything queued: AFNI finishes the run
            self._writer.close()
            await asyncio.wait_for(self._writer.wait_closed(), 2.0)


class ShmDataChannel(DataChannel):
    def __init__(self, segment: ShmWriter, description: str, send_timeout: float) -> None:
        self._seg = segment
        self.description = description
        self._send_timeout = send_timeout
        self._closed = False

    @property
    def alive(self) -> bool:
        return not self._closed and self._seg.alive()

    async def send(self, payload: bytes, whole: bool = False) -> None:
        offset, idle_since = 0, time.monotonic()
        if whole and len(payload) > self._seg.bufsize - 1:
            raise ValueError(f"{len(payload)} bytes cannot go in one piece through a {self._seg.bufsize - 1}-byte ring")
        while whole and self._seg.writable() < len(payload):  # wait for room for all of it, then one copy
            if not self._seg.alive():
                raise ConnectionResetError("AFNI detached from the shared-memory segment")
            if time.monotonic() - idle_since > self._send_timeout:
                raise TimeoutError(f"AFNI read nothing from the shared-memory ring for {self._send_timeout:.0f} s")
            await asyncio.sleep(0.001)
        while offset < len(payload):
            n = self._seg.send(payload, offset)
            if n:
                offset += n
                idle_since = time.monotonic()
                continue
            if not self._seg.alive():
                raise ConnectionResetError("AFNI detached from the shared-memory segment")
            if time.monotonic() - idle_since > self._send_timeout:
                raise TimeoutError(f"AFNI read nothing from the shared-memory ring for {self._send_timeout:.0f} s")
            await asyncio.sleep(0.001)

    async def close(self, drain: float = 5.0) -> None:
        """Wait (bounded) until AFNI has read everything, then detach and remove the segment.

        For shm, AFNI treats a detached writer as end of run even with unread bytes, so the
        ring must be empty first (rtfeedme's "Clearing buffer").
        """
        if self._closed:
            return
        deadline = time.monotonic() + drain
        while self._seg.readable() and self._seg.alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        self._closed = True
        self._seg.close()


async def send_control(settings: ChannelSettings) -> None:
    """Control channel: connect, send the data spec and its NUL, close (AFNI reads to EOF)."""
    message = protocol.control_message(settings.data_spec())
    where = f"{settings.host}:{settings.control_port}"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(settings.host, settings.control_port), settings.connect_timeout
        )
    except ConnectionRefusedError as exc:
        raise AfniUnavailable(
            f"AFNI is not listening on {where} (not started with -rt, still finishing a run, or another port)"
        ) from exc
    except TimeoutError as exc:
        raise AfniUnavailable(f"no answer from {where} within {settings.connect_timeout:.1f} s") from exc
    except OSError as exc:
        raise AfniUnavailable(f"cannot reach AFNI at {where}: {exc.strerror or exc}") from exc
    try:
        writer.write(message)
        await asyncio.wait_for(writer.drain(), settings.connect_timeout)
    except (ConnectionError, OSError, TimeoutError) as exc:
        raise AfniUnavailable(
            f"AFNI at {where} dropped the control connection ({exc}); is this host trusted (AFNI_TRUSTHOST)?"
        ) from exc
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)


async def _connect_data(settings: ChannelSettings) -> TcpDataChannel:
    deadline = time.monotonic() + settings.data_timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(settings.host, settings.data_port), settings.connect_timeout
            )
            return TcpDataChannel(reader, writer, f"tcp {settings.host}:{settings.data_port}")
        except (ConnectionRefusedError, TimeoutError) as exc:
            last = exc
            await asyncio.sleep(0.01)
        except OSError as exc:
            raise AfniUnavailable(f"cannot connect to AFNI's data port {settings.data_port}: {exc}") from exc
    raise AfniUnavailable(
        f"AFNI took the control string but did not open data port {settings.data_port} within "
        f"{settings.data_timeout:.1f} s ({last}); check AFNI_TRUSTHOST and the port settings"
    )


async def _attach_shm(settings: ChannelSettings) -> ShmDataChannel:
    try:
        segment = ShmWriter(settings.shm_name or "", settings.shm_size, settings.port_offset)
    except ShmError as exc:
        raise AfniUnavailable(str(exc)) from exc
    try:
        await send_control(settings)
        deadline = time.monotonic() + settings.data_timeout
        while segment.nattach() < 2:
            if time.monotonic() >= deadline:
                raise AfniUnavailable(
                    f"AFNI did not attach to shared memory {settings.shm_name!r} within "
                    f"{settings.data_timeout:.1f} s (is AFNI on this machine, same AFNI_PORT_OFFSET?)"
                )
            await asyncio.sleep(0.002)
        segment.mark_removed()  # from now on the kernel frees it whenever both ends are gone
    except BaseException:
        segment.close()
        raise
    return ShmDataChannel(segment, f"shm {settings.shm_name}:{settings.shm_size}", settings.send_timeout)


async def open_data_channel(settings: ChannelSettings) -> DataChannel:
    """Control string then data channel, ready for the metadata block."""
    if settings.shm_name:
        return await _attach_shm(settings)
    await send_control(settings)
    return await _connect_data(settings)
