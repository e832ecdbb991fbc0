"""Connect the controller to the parts of rtcontrol that do the real work.

The links are made here, not in the controller, so the controller stays testable on its own
with fake links (see :mod:`rtcontrol.console.ports`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any, Protocol

from rtcontrol.afni.link import attach_to_console
from rtcontrol.console.controller import ConsoleController
from rtcontrol.scanner.volume import Timeline
from rtcontrol.subject.link import SubjectClient
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


async def _connect_worker(session: ConsoleSession, stack: contextlib.AsyncExitStack) -> None:
    c = session.controller
    s = c.settings.worker
    adapter = WorkerAdapter(c)
    if s.url:
        url, token, expected, pins = s.url, s.token, s.fingerprint or None, _known_hosts(session)
    else:
        from rtcontrol.worker.embedded import local_worker

        c.connection("worker", "connecting", detail="starting a worker on this machine")
        c.info("starting a worker on this machine…", "worker")
        try:
            info = await stack.enter_async_context(local_worker(**session.worker_options))
        except Exception as exc:
            c.connection("worker", "failed", detail=str(exc))
            c.error(f"the local worker did not start: {exc}", "worker")
            return
        session.embedded["worker"] = info
        url, token, expected, pins = info.url, info.token, info.fingerprint, None
        c.info(f"worker started on this machine at {info.url}", "worker")
    client = WorkerClient(
        url, token, pins=pins, expected_fingerprint=expected,
        allowed_folders=[Path(f) for f in c.settings.files.allowed_folders],
        on_feedback=adapter.on_feedback, on_log=adapter.on_log, on_error=adapter.on_error,
        on_state=adapter.on_state, on_subject_message=adapter.on_subject_message, on_run_state=adapter.on_run_state,
        replay_source=c.recorded_volumes,  # a worker restarted mid-run gets the run's volumes from the recording
        backoff=(0.05, 0.25),  # a worker back after a restart is found within a quarter second
    )
    adapter.client, adapter.url = client, url
    c.connection("worker", "connecting", url=url)
    try:
        await client.connect()
    except Exception as exc:
        c.connection("worker", "failed", url=url, detail=str(exc))
        c.error(f"cannot reach the worker at {url}: {exc}", "worker")
        return
    stack.push_async_callback(client.close)
    adapter.on_state(client.state)
    c.attach_worker(adapter)


class WorkerAdapter:
    """:class:`rtcontrol.worker.client.WorkerClient` seen as the controller's ``WorkerLink``."""

    def __init__(self, controller: Any) -> None:
        self.c = controller
        self.client: Any = None
        self.url = ""

    async def list_projects(self) -> list[dict[str, Any]]:
        return list(await self.client.list_projects())

    @property
    def plugins(self) -> dict[str, Any] | None:
        """The worker's plugins as its last project list carried them (None from an older worker)."""
        return getattr(self.client, "plugins", None)

    async def project_settings(self, project: str) -> list[dict[str, Any]]:
        return list(await self.client.project_settings(project))

    async def start_run(self, run: str, project: str, settings: dict[str, Any], tr: float) -> None:
        from rtcontrol.worker.console_files import ConsoleFiles

        # the run's [files] allowed_folders (the operator may have changed them since the link came up)
        self.client.files = ConsoleFiles([Path(f) for f in self.c.settings.files.allowed_folders])
        await self.client.start_run(project, settings, run, tr)

    async def send_volume(self, volume: Any) -> None:
        await self.client.send_volume(volume)

    async def send_response(self, response: dict[str, Any]) -> None:
        await self.client.send_response(response)

    async def stop_run(self) -> None:
        if self.client.run is not None:
            await self.client.stop_run()

    async def close(self) -> None:
        await self.client.close()

    def refresh_status(self) -> None:
        """Re-publish the link state with the latest round-trip time."""
        if self.client is not None:
            self.on_state(self.client.state)

    # callbacks from the client
    def on_feedback(self, event: Any) -> None:
        self.c.handle_feedback(event.run, event.index, event.feedback, event.metrics, event.timeline)

    def on_log(self, run: Any, level: str, message: str) -> None:
        self.c.handle_log(str(level).lower().replace("critical", "error"), str(message), "project")

    def on_error(self, message: str, traceback: str = "") -> None:
        last = traceback.strip().splitlines()[-1] if traceback and traceback.strip() else ""
        self.c.error(f"{message}" + (f" ({last})" if last and last not in message else ""), "worker")

    def on_state(self, state: str) -> None:
        mapped = {"disconnected": "closed", "reconnecting": "connecting", "resyncing": "connecting"}.get(state, state)
        rtt = self.client.rtt if self.client is not None else None
        self.c.connection("worker", mapped, url=self.url, fingerprint=str(self.client.fingerprint or ""),
                          rtt_ms=None if rtt is None else rtt * 1e3,
                          detail="" if mapped != "connecting" or state == "connecting" else f"{state} after a drop")

    def on_subject_message(self, run: Any, message: Any) -> None:
        self.c.forward_subject_message(message if isinstance(message, dict) else {"text": str(message)})

    def on_run_state(self, run: Any, state: str, info: Any) -> None:
        if state == "failed":
            self.c.project_failed(str(run), str((info or {}).get("message", "the project failed")))
        elif state == "restarting":
            self.c.worker_restarting(str(run), dict(info or {}))
        elif state == "restarted":
            self.c.worker_restarted(str(run), dict(info or {}))


async def _connect_subject(session: ConsoleSession, stack: contextlib.AsyncExitStack) -> None:
    c = session.controller
    s = c.settings.subject
    adapter = SubjectAdapter(c)
    if s.url:
        url, token, expected, pins = s.url, s.token, s.fingerprint or None, _known_hosts(session)
    else:
        from rtcontrol.subject.embedded import local_subject_agent

        c.connection("subject", "connecting", detail="starting a subject agent on this machine")
        info = await stack.enter_async_context(local_subject_agent(display=session.subject_display))
        session.embedded["subject"] = info
        url, token, expected, pins = info.url, info.token, info.fingerprint, None
        c.info(f"subject agent started on this machine at {info.url}"
               + (f"; stimulus page at {info.page_url}" if info.page_url else ""), "subject")
    client = SubjectClient(
        url, token=token, pins=pins, expected_fingerprint=expected,
        on_delivery=adapter.on_delivery, on_response=adapter.on_response,
        on_state=adapter.on_state, on_error=adapter.on_error,
    )
    adapter.client = client
    adapter.url = url
    c.connection("subject", "connecting", url=url)
    try:
        await client.connect()
    except Exception as exc:
        reason = str(exc).removeprefix(f"{url}: ")  # the link's errors name the address; say it once
        c.connection("subject", "failed", url=url, detail=reason)
        c.error(f"cannot reach the subject agent at {url}: {reason}", "subject")
        await client.close()
        return
    stack.push_async_callback(client.close)
    c.attach_subject(adapter)


class SubjectAdapter:
    """:class:`rtcontrol.subject.link.SubjectClient` seen as the controller's ``SubjectLink``."""

    ONSET = {"immediate": "immediate", "next_tr": "tr", "delay": "delay"}

    def __init__(self, controller: Any) -> None:
        self.c = controller
        self.client: Any = None
        self.url = ""
        self.run = ""

    async def start_run(self, run: str, tr: float, onset: str, delay: float) -> None:
        self.run = run
        await self.client.start_run(
            {"run": run, "tr": tr, "onset": {"mode": self.ONSET.get(onset, onset), "delay": delay, "tr": tr}}
        )

    async def send_feedback(self, run: str, index: int, value: Any, timeline: Timeline) -> None:
        self.client.send_feedback(run, index, value, timeline.to_dict(), acquired=timeline.get("file_seen"))

    async def send_message(self, message: dict[str, Any]) -> None:
        self.client.send_message(str(message.get("text") or ""), kind=str(message.get("kind") or "text"),
                                 run=self.run or None, data=message.get("data"))

    async def stop_run(self) -> None:
        await self.client.stop_run(self.run or None)

    async def close(self) -> None:
        await self.client.close()

    def refresh_status(self) -> None:
        if self.client is not None:
            self.on_state({**self.client.agent_state, "link": "connected" if self.client.connected else "connecting"})

    # callbacks from the client
    def on_delivery(self, run: str, index: int, stamps: dict[str, Any]) -> None:
        timeline = Timeline.from_dict({k: v for k, v in stamps.items() if isinstance(v, (int, float))})
        self.c.handle_delivery(run, index, timeline, late=bool(stamps.get("late")),
                               onset_missed=bool(stamps.get("onset_missed")), outcome=str(stamps.get("outcome") or ""),
                               taken_by=tuple(str(n) for n in stamps.get("taken_by") or ()))

    def on_response(self, response: dict[str, Any]) -> None:
        self.c.handle_response(response)

    def on_state(self, state: dict[str, Any]) -> None:
        link = str(state.get("link", ""))
        mapped = {"disconnected": "closed", "refused": "failed"}.get(link, link)
        rtt = self.client.clock.rtt if self.client is not None else None
        consumers = state.get("consumers")
        detail = (str(state.get("error") or "").removeprefix(f"{self.url}: ")  # the address is said beside it
                  or (f"{len(consumers)} stimulus program(s) attached" if consumers else ""))
        self.c.connection("subject", mapped, url=self.url, detail=str(detail or ""),
                          fingerprint=str(state.get("fingerprint") or getattr(self.client, "fingerprint", "") or ""),
                          rtt_ms=None if rtt is None else rtt * 1e3)

    def on_error(self, message: str) -> None:
        self.c.error(f"the subject agent refused: {message}", "subject")


def _known_hosts(session: ConsoleSession) -> Any:
    from rtcontrol.link.pinning import KnownHosts

    return KnownHosts(session.known_hosts, on_unknown=session.on_unknown_host)
