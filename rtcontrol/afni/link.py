"""The console's AFNI link: on/off, settings, the sender, and AFNI's returned motion, in one Qt-free object.

The GUI's AFNI panel (``rtcontrol.gui.afni_panel``) is a view of an :class:`AfniLink`; the
console controller uses it as its AFNI ``VolumeSink`` (``send_volume`` only queues: AFNI's
trouble never reaches the scanner path). The console wires one to its controller
(:func:`rtcontrol.console.links.attach_to_console`: settings ``[afni]``, connection state and warnings,
end of run).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rtcontrol.afni import protocol
from rtcontrol.afni.channel import ChannelSettings
from rtcontrol.afni.motion import DEFAULT_PORT, MotionBye, MotionHello, MotionReceiver, MotionRecord
from rtcontrol.afni.sender import AfniSender, SenderEvent, SenderSettings, SenderStatus
from rtcontrol.scanner.volume import Volume


@dataclass
class AfniLinkSettings:
    """What the operator sets in the AFNI panel (applied when the link is switched on)."""

    host: str = "127.0.0.1"
    control_port: int = protocol.DEFAULT_CONTROL_PORT
    data_port: int = protocol.DEFAULT_DATA_PORT
    use_shm: bool = False  # shared memory instead of TCP (AFNI on this machine)
    shm_name: str = "rtcontrol"
    shm_size: int = 4 * 1024 * 1024
    keep_connection: bool = False
    prefix: str | None = None  # None: the run's name
    note: str | None = None
    motion: bool = False  # listen for AFNI_REALTIME_MP_HOST_PORT
    motion_host: str | None = None  # None: loopback when AFNI is on this machine, else all interfaces
    motion_port: int = DEFAULT_PORT

    def validate(self) -> AfniLinkSettings:
        for key in ("control_port", "data_port", "motion_port"):
            port = getattr(self, key)
            if not 0 <= int(port) <= 65535:
                raise ValueError(f"AFNI {key.replace('_', ' ')} {port} is not a TCP port")
        if not self.host.strip():
            raise ValueError("AFNI host is empty")
        if self.use_shm:
            protocol.shm_spec(self.shm_name, self.shm_size)
        return self

    def motion_listen_host(self) -> str:
        """The console takes no inbound connection unless asked: listen wider only for a remote AFNI."""
        if self.motion_host:
            return self.motion_host
        return "127.0.0.1" if self.host.strip() in ("127.0.0.1", "localhost", "::1") else "0.0.0.0"

    def sender_settings(self) -> SenderSettings:
        return SenderSettings(
            channel=ChannelSettings(
                host=self.host.strip(),
                control_port=int(self.control_port),
                data_port=int(self.data_port),
                shm_name=self.shm_name if self.use_shm else None,
                shm_size=int(self.shm_size),
            ),
            header=protocol.HeaderOptions(prefix=self.prefix or None, note=self.note or None),
            keep_connection=self.keep_connection,
        )


@dataclass(frozen=True)
class MotionUpdate:
    """AFNI's motion channel changed: a new record, a new run (hello), the end, or an error."""

    kind: str  # "hello", "record", "bye", "listening", "error"
    record: MotionRecord | None = None
    message: str = ""


@dataclass
class MotionHistory:
    records: list[MotionRecord] = field(default_factory=list)
    runs: int = 0
    listening_on: str = ""
    last_error: str = ""


class AfniLink:
    """Switchable AFNI sender plus motion receiver with one event stream for views."""

    def __init__(self, settings: AfniLinkSettings | None = None) -> None:
        self.settings = settings or AfniLinkSettings()
        self.motion = MotionHistory()
        self._sender: AfniSender | None = None
        self._receiver: MotionReceiver | None = None
        self._listeners: list[Callable[[Any], None]] = []
        self._idle_status = SenderStatus()
        self._switching: asyncio.Task | None = None
        self.last_error = ""

    # ------------------------------------------------------------------ views
    def add_listener(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        """``callback(event)`` for every SenderEvent and MotionUpdate; returns an unsubscribe."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def _emit(self, event: Any) -> None:
        if isinstance(event, SenderEvent) and event.kind == "error":
            self.last_error = event.message
        for callback in list(self._listeners):
            try:
                callback(event)
            except Exception:
                pass

    @property
    def enabled(self) -> bool:
        return self._sender is not None and self._sender.running

    @property
    def status(self) -> SenderStatus:
        return self._sender.status if self._sender is not None else self._idle_status

    # ------------------------------------------------------------------ on / off
    async def start(self) -> None:
        """Switch on with the current settings (a bad setting raises ValueError, nothing starts)."""
        if self.enabled:
            return
        self.settings.validate()
        self._sender = AfniSender(self.settings.sender_settings(), self._emit)
        self.motion = MotionHistory()
        if self.settings.motion:
            self._receiver = MotionReceiver(
                self._on_motion,
                self.settings.motion_listen_host(),
                self.settings.motion_port,
                on_error=self._motion_error,
            )
            try:
                port = await self._receiver.start()
            except OSError as exc:
                self._receiver = None
                self._motion_error(f"cannot listen for AFNI motion on port {self.settings.motion_port}: {exc}")
            else:
                self.motion.listening_on = f"{self.settings.motion_listen_host()}:{port}"
                self._emit(MotionUpdate("listening", message=self.motion.listening_on))
        await self._sender.start()

    async def stop(self) -> None:
        """Switch off: end the AFNI run (AFNI saves), stop listening for motion."""
        sender, self._sender = self._sender, None
        if sender is not None:
            await sender.close()
            self._idle_status = sender.status
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            await receiver.close()
        self._emit(SenderEvent("state", "AFNI sending is off"))

    def set_enabled(self, on: bool) -> asyncio.Task:
        """Start or stop from a GUI slot (under qasync the loop is running)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = asyncio.get_event_loop()
        previous = self._switching

        async def switch() -> None:
            if previous is not None and not previous.done():
                with contextlib.suppress(Exception):
                    await previous
            try:
                await (self.start() if on else self.stop())
            except Exception as exc:
                self.last_error = str(exc)
                self._emit(SenderEvent("error", f"AFNI: {exc}"))
                with contextlib.suppress(Exception):
                    await self.stop()

        self._switching = loop.create_task(switch())
        return self._switching

    # ------------------------------------------------------------------ volumes
    def submit(self, volume: Volume) -> bool:
        """Queue a volume for AFNI when on; never blocks, never raises for AFNI trouble."""
        return self._sender.submit(volume) if self.enabled and self._sender is not None else False

    async def send_volume(self, volume: Volume) -> None:
        """The console's VolumeSink: same as :meth:`submit`."""
        self.submit(volume)

    def end_run(self) -> None:
        if self._sender is not None:
            self._sender.end_run()

    async def close(self) -> None:
        await self.stop()

    # ------------------------------------------------------------------ motion
    def _on_motion(self, event: Any) -> None:
        if isinstance(event, MotionHello):
            self.motion.records = []
            self.motion.runs += 1
            self._emit(MotionUpdate("hello", message=f"version {event.version}, {event.floats_per_tr} values/TR"))
        elif isinstance(event, MotionRecord):
            self.motion.records.append(event)
            self._emit(MotionUpdate("record", record=event))
        elif isinstance(event, MotionBye):
            self._emit(MotionUpdate("bye", message=f"{event.records} TRs"))

    def _motion_error(self, message: str) -> None:
        self.motion.last_error = message
        self._emit(MotionUpdate("error", message=message))
