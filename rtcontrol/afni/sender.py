"""The AFNI sender: hand it volumes, it feeds AFNI's realtime plugin off the hot path.

:meth:`AfniSender.submit` only puts the volume on a bounded queue and returns at once; the
sender's own task encodes and writes. AFNI being busy, not started, refusing or dropping the
connection never blocks the caller: volumes that cannot go out are reported as not sent
(``not_sent`` events) and the next volume tries again (at most every ``retry_interval``
seconds), starting a new AFNI run. A new run (another ``volume.run``, another geometry)
ends the current AFNI run: by closing the data channel, or with the end-of-run image and a
new metadata block on the same connection (``keep_connection``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from rtcontrol.afni import protocol
from rtcontrol.afni.channel import AfniUnavailable, ChannelSettings, DataChannel, open_data_channel
from rtcontrol.link.delivery import LinkState
from rtcontrol.scanner.volume import Volume

#: A volume whose affine differs more than this (mm) from the run's first starts a new AFNI run.
GEOMETRY_TOLERANCE_MM = 1e-3
#: Volumes larger than this are converted to AFNI's byte order in a thread (a copy of a few ms).
ENCODE_IN_THREAD_BYTES = 4 * 1024 * 1024
#: Sender states shown to the operator.
class SenderState(enum.StrEnum):
    """The AFNI sender's state; :attr:`link_state` is how the console's connections list shows it."""

    OFF = "off"
    IDLE = "idle"  # on, between runs
    CONNECTING = "connecting"
    SENDING = "sending"
    WAITING = "waiting"  # AFNI is not there (or dropped us): volumes are not sent until it is back
    ERROR = "error"

    @property
    def link_state(self) -> LinkState:
        if self in (SenderState.SENDING, SenderState.IDLE):
            return LinkState.CONNECTED
        if self is SenderState.OFF:
            return LinkState.OFF
        return LinkState.FAILED if self is SenderState.WAITING else LinkState.CONNECTING


STATES = tuple(SenderState)


@dataclass(frozen=True)
class SenderSettings:
    channel: ChannelSettings = ChannelSettings()
    header: protocol.HeaderOptions = protocol.HeaderOptions()
    prefix_from_run: bool = True  # PREFIX = the run name when header.prefix is not set
    keep_connection: bool = False  # end runs with the end-of-run image instead of closing
    queue_size: int = 8  # volumes waiting for the wire; more are reported as not sent
    retry_interval: float = 1.0  # seconds between attempts to reach AFNI
    header_pause: float = 0.05  # seconds between the metadata block and the first image (Dimon: 50 ms)
    reconnect_grace: float = 3.0  # after we end a run AFNI saves it and refuses briefly: keep trying this long
    # seconds a volume waits for an unreachable AFNI (0: report it not sent; afni-feed waits)
    wait_for_afni: float = 0.0


@dataclass(frozen=True)
class SenderEvent:
    kind: str  # "state", "header", "sent", "not_sent", "run_end", "warning", "error"
    message: str = ""
    run: str | None = None
    index: int | None = None
    nbytes: int = 0
    latency: float | None = None  # seconds from submit() to bytes written (sent)
    header: str | None = None  # metadata text ("header")


@dataclass
class SenderStatus:
    state: SenderState = SenderState.OFF
    detail: str = ""
    volumes_sent: int = 0
    volumes_not_sent: int = 0
    runs_started: int = 0
    current_run: str | None = None
    header_text: str = ""
    last_error: str = ""
    last_sent_index: int | None = None
    errors: list[str] = field(default_factory=list)


_STOP = object()
_END_RUN = object()


@dataclass
class _Run:
    """One AFNI run: the metadata sent at its start fixes what its images may be."""

    name: str
    header: protocol.RunHeader
    first: Volume
    volumes: int = 0

    def accepts(self, volume: Volume) -> bool:
        """Same run, grid and data kind. Slice timing and TR jitter do not start a new run."""
        first = self.first
        return (
            volume.run == self.name
            and volume.shape == first.shape
            and volume.data.dtype == first.data.dtype
            and protocol.is_scaled(volume) == protocol.is_scaled(first)
            and bool(np.allclose(volume.affine, first.affine, rtol=0.0, atol=GEOMETRY_TOLERANCE_MM))
        )


class AfniSender:
    """Feeds volumes to AFNI from its own asyncio task. Qt-free; the GUI panel watches events."""

    def __init__(
        self,
        settings: SenderSettings = SenderSettings(),
        on_event: Callable[[SenderEvent], None] | None = None,
    ) -> None:
        self.settings = settings
        self.status = SenderStatus()
        self._listeners: list[Callable[[SenderEvent], None]] = [on_event] if on_event else []
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._channel: DataChannel | None = None
        self._run: _Run | None = None
        self._next_attempt = 0.0
        self._grace_until = 0.0

    # ------------------------------------------------------------------ caller side

    def add_listener(self, callback: Callable[[SenderEvent], None]) -> None:
        self._listeners.append(callback)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the sender task (connects lazily, at the first volume)."""
        if self.running:
            return
        self._queue = asyncio.Queue(maxsize=max(1, self.settings.queue_size))
        self._next_attempt = 0.0
        self._grace_until = 0.0
        self._task = asyncio.get_running_loop().create_task(self._main(), name="afni-sender")
        self._set_state(SenderState.IDLE, f"ready for {self.settings.channel.describe()}")

    def submit(self, volume: Volume) -> bool:
        """Queue a volume for AFNI; never blocks. False (and a not_sent event) if it cannot go.

        Call it on the event loop's thread (the console's pump does).
        """
        if not self.running or self._queue is None:
            self._not_sent(volume, "AFNI sender is off")
            return False
        try:
            self._queue.put_nowait((volume, time.perf_counter()))
        except asyncio.QueueFull:
            self._not_sent(volume, f"AFNI sender backlog full ({self.settings.queue_size} volumes): AFNI too slow")
            return False
        return True

    def end_run(self) -> None:
        """End the current AFNI run after the queued volumes (AFNI saves the dataset)."""
        if self.running and self._queue is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(_END_RUN)

    async def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (bounded by ``timeout``), end the run, stop the task."""
        if self._task is None:
            return
        if not self._task.done() and self._queue is not None:
            try:
                self._queue.put_nowait(_STOP)
            except asyncio.QueueFull:
                self._task.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        await self._drop_channel()
        self._task = None
        self._set_state(SenderState.OFF, "stopped")

    # ------------------------------------------------------------------ sender task

    async def _main(self) -> None:
        assert self._queue is not None
        try:
            while True:
                item = await self._queue.get()
                if item is _STOP:
                    await self._end_run(closing=True)
                    return
                if item is _END_RUN:
                    await self._end_run()
                    continue
                volume, t_submit = item
                try:
                    await self._handle(volume, t_submit)
                except Exception as exc:  # never let one volume kill the sender
                    await self._drop_channel()
                    self._error(f"volume {volume.index}: {type(exc).__name__}: {exc}")
                    self._not_sent(volume, str(exc))
        finally:
            await self._drop_channel()

    async def _handle(self, volume: Volume, t_submit: float) -> None:
        if self._run is not None and not self._run.accepts(volume):
            await self._end_run()
        if self._channel is not None and not self._channel.alive:
            self._warn("AFNI dropped the data channel; reconnecting")
            await self._drop_channel()
        header = None
        if self._run is None:
            options = self.settings.header
            if options.prefix is None and self.settings.prefix_from_run and volume.run:
                options = replace(options, prefix=volume.run)
            try:
                header = protocol.build_header(volume, options)
            except protocol.HeaderError as exc:
                self._error(str(exc))
                self._not_sent(volume, str(exc))
                return
        if self._run is None and (header is None or not await self._begin_run(volume, header)):
            return
        assert self._run is not None and self._channel is not None
        run_header = self._run.header
        if volume.data.nbytes > ENCODE_IN_THREAD_BYTES:  # keep the event loop free for big volumes
            image = await asyncio.to_thread(protocol.encode_image, volume, run_header)
        else:
            image = protocol.encode_image(volume, run_header)
        if image.clipped:
            self._warn(f"volume {volume.index}: {image.clipped} voxels outside the int16 range were clipped")
        try:
            await asyncio.wait_for(self._channel.send(image.payload), self.settings.channel.send_timeout)
        except (ConnectionError, OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            await self._drop_channel()
            self._next_attempt = time.monotonic() + self.settings.retry_interval
            self._set_state(SenderState.WAITING, f"lost AFNI: {reason}")
            self._not_sent(volume, f"AFNI connection lost: {reason}")
            return
        latency = time.perf_counter() - t_submit
        self._run.volumes += 1
        self.status.volumes_sent += 1
        self.status.last_sent_index = volume.index
        self._emit(
            SenderEvent("sent", run=volume.run, index=volume.index, nbytes=len(image.payload), latency=latency)
        )

    async def _begin_run(self, volume: Volume, header: protocol.RunHeader) -> bool:
        """Open the channel if needed and send the metadata block; False if AFNI is unreachable."""
        if self._channel is None:
            channel = await self._connect(volume)
            if channel is None:
                return False
            self._channel = channel
        try:
            timeout = self.settings.channel.send_timeout
            await asyncio.wait_for(self._channel.send(header.block, whole=True), timeout)
        except (ConnectionError, OSError, TimeoutError) as exc:
            await self._drop_channel()
            self._next_attempt = time.monotonic() + self.settings.retry_interval
            self._set_state(SenderState.WAITING, f"AFNI dropped the connection at the header: {exc}")
            self._not_sent(volume, f"AFNI dropped the connection: {exc}")
            return False
        self._run = _Run(volume.run, header, volume)
        self.status.runs_started += 1
        self.status.current_run = volume.run
        self.status.header_text = header.text
        self._emit(SenderEvent("header", run=volume.run, header=header.text, message=self._channel.description))
        for warning in header.warnings:
            self._warn(warning)
        self._set_state(SenderState.SENDING, f"run {volume.run!r} to AFNI ({self._channel.description})")
        if self.settings.header_pause > 0:
            await asyncio.sleep(self.settings.header_pause)
        return True

    async def _connect(self, volume: Volume) -> DataChannel | None:
        """Control string + data channel; retries every ``retry_interval`` for ``wait_for_afni`` s."""
        cs = self.settings.channel
        give_up = max(time.monotonic() + max(0.0, self.settings.wait_for_afni), self._grace_until)
        while True:
            now = time.monotonic()
            if now < self._next_attempt:
                if now >= give_up:
                    self._not_sent(volume, f"AFNI unreachable ({self.status.detail})")
                    return None
                await asyncio.sleep(min(self._next_attempt, give_up) - now)
                continue
            self._set_state(SenderState.CONNECTING, f"connecting to AFNI at {cs.describe()}")
            try:
                return await open_data_channel(cs)
            except AfniUnavailable as exc:
                now = time.monotonic()
                interval = self.settings.retry_interval
                self._next_attempt = now + (min(0.05, interval) if now < self._grace_until else interval)
                self._set_state(SenderState.WAITING, str(exc))
                if now >= give_up:
                    self._not_sent(volume, f"AFNI unreachable: {exc}")
                    return None

    async def _end_run(self, closing: bool = False) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        self.status.current_run = None
        message = f"run {run.name!r}: {run.volumes} volumes sent"
        if self._channel is not None and self.settings.keep_connection and not closing and self._channel.alive:
            try:
                marker = protocol.end_of_run_image(run.header.imsize)
                await asyncio.wait_for(self._channel.send(marker), self.settings.channel.send_timeout)
                message += " (end-of-run marker, connection kept)"
            except (ConnectionError, OSError, TimeoutError) as exc:
                await self._drop_channel()
                message += f" (AFNI connection lost at the end marker: {exc})"
        else:
            await self._drop_channel()
            self._grace_until = time.monotonic() + self.settings.reconnect_grace
            message += " (data channel closed: AFNI saves the dataset)"
        self._emit(SenderEvent("run_end", message, run=run.name))
        if not closing:
            self._set_state(SenderState.IDLE, message)

    async def _drop_channel(self) -> None:
        channel, self._channel = self._channel, None
        self._run = None
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()

    # ------------------------------------------------------------------ events

    def _emit(self, event: SenderEvent) -> None:
        for callback in list(self._listeners):
            try:
                callback(event)
            except Exception:  # a broken view must not stop the sender
                pass

    def _set_state(self, state: SenderState, detail: str = "") -> None:
        changed = (state, detail) != (self.status.state, self.status.detail)
        self.status.state, self.status.detail = state, detail
        if changed:
            self._emit(SenderEvent("state", detail, run=self.status.current_run))

    def _not_sent(self, volume: Volume, reason: str) -> None:
        self.status.volumes_not_sent += 1
        self._emit(SenderEvent("not_sent", reason, run=volume.run, index=volume.index))

    def _warn(self, message: str) -> None:
        self._emit(SenderEvent("warning", message))

    def _error(self, message: str) -> None:
        self.status.last_error = message
        self.status.errors = (self.status.errors + [message])[-20:]
        self._emit(SenderEvent("error", message))
