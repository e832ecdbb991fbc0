"""Connect the controller to the parts of rtcontrol that do the real work.

The links are made here, not in the controller, so the controller stays testable on its own with
fake links (see :mod:`rtcontrol.console.ports`). The adapters turn each link's events
(:mod:`rtcontrol.link.events`, one ``on_event`` callback) into controller calls, and
:func:`attach_to_console` wires the AFNI sender (the AFNI part does not know the console).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any, Protocol

from rtcontrol.afni.link import AfniLink, AfniLinkSettings
from rtcontrol.afni.sender import SenderEvent
from rtcontrol.console import events as ev
from rtcontrol.console.controller import ConsoleController
from rtcontrol.link.delivery import LinkState
from rtcontrol.link.events import (
    Delivery,
    FeedbackEvent,
    LinkEvent,
    LogLine,
    MapEvent,
    Problem,
    Response,
    RunChange,
    RunChanged,
    StateChanged,
    SubjectMessage,
)
from rtcontrol.scanner.volume import Timeline
from rtcontrol.subject.link import SubjectClient
from rtcontrol.subject.protocol import OnsetMode
from rtcontrol.worker.client import WorkerClient


class ConsoleSession(Protocol):
    """What the links need of :class:`rtcontrol.console.session.ConsoleSession` (which imports this module)."""

    controller: ConsoleController
    worker_options: dict[str, Any]
    subject_display: bool
    embedded: dict[str, Any]
    known_hosts: Path | None
    on_unknown_host: Any


log = logging.getLogger("rtcontrol.console")


async def connect_all(session: ConsoleSession, stack: contextlib.AsyncExitStack) -> None:
    """Worker and subject agent: remote when the settings give a URL, embedded otherwise."""
    c = session.controller
    # both at once: starting a local worker process takes a moment the subject agent need not wait for
    await asyncio.gather(_connect_worker(session, stack), _connect_subject(session, stack))
    if c.settings.afni.enabled or c.afni is not None:
        attach_to_console(c)  # reuses the GUI panel's link; switched on when [afni] enabled = true
        c.info(f"AFNI realtime sender {'on' if c.settings.afni.enabled else 'ready (off)'}: "
               f"{c.settings.afni.host}:{c.settings.afni.control_port}", "afni")


def attach_to_console(controller: ConsoleController) -> AfniLink:
    """The console controller's AFNI link: reuse ``controller.afni`` or make one from ``[afni]``.

    Sender states go to ``controller.connection("afni", ...)``, problems to its log, and the
    AFNI run ends when the console's run ends. Switched on when the settings say ``enabled``.
    """
    if isinstance(controller.afni, AfniLink):
        return controller.afni
    section = controller.settings.afni
    link = AfniLink(AfniLinkSettings(host=section.host, control_port=section.control_port,
                                     data_port=section.data_port))

    def forward(event: Any) -> None:
        if isinstance(event, SenderEvent):
            if event.kind == "state":
                controller.connection("afni", link.status.state.link_state, detail=event.message)
            elif event.kind in ("not_sent", "warning"):
                if event.kind == "warning" or event.index in (0, None) or link.status.volumes_not_sent % 10 == 1:
                    controller.warn(f"AFNI: {event.message}", "afni")
            elif event.kind == "error":
                controller.error(f"AFNI: {event.message}", "afni")

    link.add_listener(forward)

    def on_console_event(event: Any) -> None:
        if isinstance(event, ev.RunEnded):
            link.end_run()

    controller.events.subscribe(on_console_event)
    controller.attach_afni(link)
    if section.enabled:
        with contextlib.suppress(RuntimeError):
            link.set_enabled(True)
    return link


async def _connect_worker(session: ConsoleSession, stack: contextlib.AsyncExitStack) -> None:
    c = session.controller
    s = c.settings.worker
    adapter = WorkerAdapter(c)
    if s.url:
        url, token, expected, pins = s.url, s.token, s.fingerprint or None, _known_hosts(session)
    else:
        from rtcontrol.worker.embedded import local_worker

        c.connection("worker", LinkState.CONNECTING, detail="starting a worker on this machine")
        c.info("starting a worker on this machine…", "worker")
        try:
            info = await stack.enter_async_context(local_worker(**session.worker_options))
        except Exception as exc:
            c.connection("worker", LinkState.FAILED, detail=str(exc))
            c.error(f"the local worker did not start: {exc}", "worker")
            return
        session.embedded["worker"] = info
        url, token, expected, pins = info.url, info.token, info.fingerprint, None
        c.info(f"worker started on this machine at {info.url}", "worker")
    client = WorkerClient(
        url, token, pins=pins, expected_fingerprint=expected,
        allowed_folders=[Path(f) for f in c.settings.files.allowed_folders],
        on_event=adapter.on_event,
        replay_source=c.recorded_volumes,  # a worker restarted mid-run gets the run's volumes from the recording
        backoff=(0.05, 0.25),  # a worker back after a restart is found within a quarter second
    )
    adapter.client, adapter.url = client, url
    c.connection("worker", LinkState.CONNECTING, url=url)
    try:
        await client.connect()
    except Exception as exc:
        c.connection("worker", LinkState.FAILED, url=url, detail=str(exc))
        c.error(f"cannot reach the worker at {url}: {exc}", "worker")
        return
    stack.push_async_callback(client.close)
    adapter.show_state(client.state)
    c.attach_worker(adapter)


class WorkerAdapter:
    """:class:`rtcontrol.worker.client.WorkerClient` seen as the controller's ``WorkerLink``."""

    def __init__(self, controller: ConsoleController) -> None:
        self.c = controller
        self.client: WorkerClient | None = None
        self.url = ""

    @property
    def linked(self) -> WorkerClient:
        """The client; set by :func:`_connect_worker` before the controller gets this adapter."""
        if self.client is None:
            raise RuntimeError("the worker link is not set up yet")
        return self.client

    async def list_projects(self) -> list[dict[str, Any]]:
        return list(await self.linked.list_projects())

    @property
    def plugins(self) -> dict[str, Any] | None:
        """The worker's plugins as its last project list carried them (None from an older worker)."""
        return self.linked.plugins

    async def project_settings(self, project: str) -> list[dict[str, Any]]:
        return list(await self.linked.project_settings(project))

    async def start_run(self, run: str, project: str, settings: dict[str, Any], tr: float) -> dict[str, Any]:
        from rtcontrol.worker.console_files import ConsoleFiles

        # the run's [files] allowed_folders (the operator may have changed them since the link came up)
        client = self.linked
        client.files = ConsoleFiles([Path(f) for f in self.c.settings.files.allowed_folders])
        return dict(await client.start_run(project, settings, run, tr) or {})

    async def send_volume(self, volume: Any) -> None:
        await self.linked.send_volume(volume)

    async def send_response(self, response: dict[str, Any]) -> None:
        await self.linked.send_response(response)

    async def stop_run(self) -> None:
        client = self.linked
        if client.run is not None:
            await client.stop_run()

    async def close(self) -> None:
        await self.linked.close()

    def refresh_status(self) -> None:
        """Re-publish the link state with the latest round-trip time."""
        if self.client is not None:
            self.show_state(self.client.state)

    def on_event(self, event: LinkEvent) -> None:
        """Everything the worker link says, passed on to the controller."""
        match event:
            case FeedbackEvent():
                self.c.handle_feedback(event.run, event.index, event.feedback, event.metrics, event.timeline)
            case MapEvent():
                self.c.handle_map(event.run, event.index, event.name, event.data, event.affine, event.peak)
            case LogLine():
                self.c.handle_log(str(event.level).lower().replace("critical", "error"), str(event.message),
                                  "project")
            case Problem(message=message, traceback=traceback):
                last = traceback.strip().splitlines()[-1] if traceback and traceback.strip() else ""
                self.c.error(f"{message}" + (f" ({last})" if last and last not in message else ""), "worker")
            case StateChanged():
                self.show_state(event.state)
            case SubjectMessage(message=message):
                self.c.forward_subject_message(message if isinstance(message, dict) else {"text": str(message)})
            case RunChanged(run=run, state=RunChange.FAILED, info=info):
                self.c.project_failed(str(run), str(info.get("message", "the project failed")))
            case RunChanged(run=run, state=RunChange.RESTARTING, info=info):
                self.c.worker_restarting(str(run), dict(info))
            case RunChanged(run=run, state=RunChange.RESTARTED, info=info):
                self.c.worker_restarted(str(run), dict(info))

    def show_state(self, state: LinkState) -> None:
        shown = state.shown
        rtt = self.client.rtt if self.client is not None else None
        self.c.connection("worker", shown, url=self.url, fingerprint=str(self.linked.fingerprint or ""),
                          rtt_ms=None if rtt is None else rtt * 1e3,
                          detail="" if shown == state else f"{state} after a drop")


async def _connect_subject(session: ConsoleSession, stack: contextlib.AsyncExitStack) -> None:
    c = session.controller
    s = c.settings.subject
    adapter = SubjectAdapter(c)
    if s.url:
        url, token, expected, pins = s.url, s.token, s.fingerprint or None, _known_hosts(session)
    else:
        from rtcontrol.subject.embedded import local_subject_agent

        c.connection("subject", LinkState.CONNECTING, detail="starting a subject agent on this machine")
        info = await stack.enter_async_context(local_subject_agent(display=session.subject_display))
        session.embedded["subject"] = info
        url, token, expected, pins = info.url, info.token, info.fingerprint, None
        c.info(f"subject agent started on this machine at {info.url}"
               + (f"; stimulus page at {info.page_url}" if info.page_url else ""), "subject")
    client = SubjectClient(url, token=token, pins=pins, expected_fingerprint=expected, on_event=adapter.on_event)
    adapter.client = client
    adapter.url = url
    c.connection("subject", LinkState.CONNECTING, url=url)
    try:
        await client.connect()
    except Exception as exc:
        reason = str(exc).removeprefix(f"{url}: ")  # the link's errors name the address; say it once
        c.connection("subject", LinkState.FAILED, url=url, detail=reason)
        c.error(f"cannot reach the subject agent at {url}: {reason}", "subject")
        await client.close()
        return
    stack.push_async_callback(client.close)
    c.attach_subject(adapter)


class SubjectAdapter:
    """:class:`rtcontrol.subject.link.SubjectClient` seen as the controller's ``SubjectLink``."""

    def __init__(self, controller: ConsoleController) -> None:
        self.c = controller
        self.client: SubjectClient | None = None
        self.url = ""
        self.run = ""

    @property
    def linked(self) -> SubjectClient:
        """The client; set by :func:`_connect_subject` before the controller gets this adapter."""
        if self.client is None:
            raise RuntimeError("the subject link is not set up yet")
        return self.client

    async def start_run(self, run: str, tr: float, onset: str, delay: float) -> None:
        self.run = run
        await self.linked.start_run(
            {"run": run, "tr": tr, "onset": {"mode": OnsetMode(onset), "delay": delay, "tr": tr}}
        )

    async def send_feedback(self, run: str, index: int, value: Any, timeline: Timeline) -> None:
        self.linked.send_feedback(run, index, value, timeline.to_dict(), acquired=timeline.get("file_seen"))

    async def send_message(self, message: dict[str, Any]) -> None:
        self.linked.send_message(str(message.get("text") or ""), kind=str(message.get("kind") or "text"),
                                 run=self.run or None, data=message.get("data"))

    async def stop_run(self) -> None:
        await self.linked.stop_run(self.run or None)

    async def close(self) -> None:
        await self.linked.close()

    def refresh_status(self) -> None:
        if self.client is not None:
            state = LinkState.CONNECTED if self.client.connected else LinkState.CONNECTING
            self.show_state(StateChanged(state, fingerprint=self.client.fingerprint or "",
                                         agent=dict(self.client.agent_state)))

    def on_event(self, event: LinkEvent) -> None:
        """Everything the subject link says, passed on to the controller."""
        match event:
            case Delivery(run=run, index=index, stamps=stamps):
                timeline = Timeline.from_dict({k: v for k, v in stamps.items() if isinstance(v, (int, float))})
                self.c.handle_delivery(run, index, timeline, late=bool(stamps.get("late")),
                                       onset_missed=bool(stamps.get("onset_missed")),
                                       outcome=str(stamps.get("outcome") or ""),
                                       taken_by=tuple(str(n) for n in stamps.get("taken_by") or ()))
            case Response(response=response):
                self.c.handle_response(response)
            case StateChanged():
                self.show_state(event)
            case Problem(message=message):
                self.c.error(f"the subject agent refused: {message}", "subject")

    def show_state(self, event: StateChanged) -> None:
        rtt = self.client.clock.rtt if self.client is not None else None
        consumers = event.agent.get("consumers")
        detail = (event.error.removeprefix(f"{self.url}: ")  # the address is said beside it
                  or (f"{len(consumers)} stimulus program(s) attached" if consumers else ""))
        self.c.connection("subject", event.state.shown, url=self.url, detail=detail,
                          fingerprint=event.fingerprint or str(self.linked.fingerprint or ""),
                          rtt_ms=None if rtt is None else rtt * 1e3)


def _known_hosts(session: ConsoleSession) -> Any:
    from rtcontrol.link.pinning import KnownHosts

    return KnownHosts(session.known_hosts, on_unknown=session.on_unknown_host)
