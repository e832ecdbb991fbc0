"""The console controller: owns one run at a time, under plain asyncio, with no Qt.

It takes volumes from the watcher, forwards each in order to the worker, the AFNI sender and
the recorder, passes the worker's feedback on to the subject agent, keeps the per-run model
and the lateness diagnostics, resumes a run on a worker that restarted mid-run (its feedback for
old volumes is catch-up: recorded, not passed on; see :mod:`rtcontrol.console.resume`), and
publishes everything on :attr:`events` for the GUI, the headless printer or a test. Links are
attached from outside (see :mod:`rtcontrol.console.links`), so the controller runs the same
against embedded loopback services or remote ones. It knows its collaborators only by the protocols
of :mod:`rtcontrol.console.ports` and calls their methods directly; ``tests/console/fakes.py``
implements them in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rtcontrol.console import events as ev
from rtcontrol.console import settings as settings_io
from rtcontrol.console.diagnostics import Diagnostics
from rtcontrol.console.model import RunModel
from rtcontrol.console.ports import Recorder, SubjectLink, VolumeSink, Watcher, WatchEvent, WorkerLink
from rtcontrol.console.resume import CatchUp, recorded_volumes, spans
from rtcontrol.console.settings import RunSettings
from rtcontrol.console.summary import save_summary
from rtcontrol.console.tr_check import choose_tr
from rtcontrol.link.delivery import LinkState
from rtcontrol.project import Design
from rtcontrol.recording.preflight import DEFAULT_VOLUME_BYTES, preflight
from rtcontrol.recording.recorder import Recorder as RunRecorder
from rtcontrol.recording.recorder import find_interrupted, recover, summarize
from rtcontrol.recording.summary import RunSummary
from rtcontrol.scanner.runs import WatchKind
from rtcontrol.scanner.volume import Timeline, Volume
from rtcontrol.scanner.watcher import ScanWatcher

log = logging.getLogger("rtcontrol.console")

#: Called to build the watcher for a run: (folder, on_volume, on_event) -> Watcher.
WatcherFactory = Callable[[Path, Callable[[Volume], Any], Callable[[WatchEvent], Any]], Watcher]
#: Called to build the recorder for a run: (settings, run_dir, on_error) -> Recorder.
RecorderFactory = Callable[[RunSettings, Path, Callable[[str], None]], Recorder]

TICK = 0.1  # seconds between status/lateness checks
#: Modules the first volume needs that are slow to import (the ROI overlay's code pulls in scipy: 0.2-0.5 s of
#: CPU). Imported in a thread while a run starts: on the event loop at volume 0 they held that volume's
#: feedback back by about 300 ms on the first run of every console.
RUN_MODULES = ("rtcontrol.console.roi",)


class ConsoleController:
    def __init__(
        self,
        settings: RunSettings,
        *,
        runs_dir: Path | None = None,
        watcher_factory: WatcherFactory | None = None,
        recorder_factory: RecorderFactory | None = None,
        record: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings.validate()
        self.runs_dir = Path(runs_dir) if runs_dir else Path.cwd() / "runs"
        self.events = ev.EventBus()
        self.model = RunModel()
        self.state: ev.RunState = ev.IDLE
        self.worker: WorkerLink | None = None
        self.subject: SubjectLink | None = None
        self.afni: VolumeSink | None = None
        self.recorder: Recorder | None = None
        self.watch_folder: Path | None = None
        self._watcher_factory = watcher_factory or default_watcher_factory
        self._recorder_factory = (recorder_factory or default_recorder_factory()) if record else None
        self._clock = clock
        self._watcher: Watcher | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._to_worker: asyncio.Queue[Volume | None] = asyncio.Queue()
        self._to_subject: asyncio.Queue[tuple[str, int, Any, Timeline] | None] = asyncio.Queue()
        self._ended: asyncio.Event = asyncio.Event()
        self._end_reason = ""
        self._files_seen = 0
        self._series = ""
        self._format = ""
        self._diag = Diagnostics(settings.run.tr)
        self._run_tr: float | None = None  # the TR the run uses, decided on its first volume (tr_check)
        self._all_in_since: float | None = None
        self.run_dir: Path | None = None
        self._declared: dict[str, list[dict[str, Any]]] = {}
        self.last_ended: ev.RunEnded | None = None
        self.last_summary: RunSummary | None = None  # the last run's end-of-run summary
        self._accepting = False  # volumes are taken from the run's start until its watcher has stopped
        self._ending: asyncio.Task[Any] | None = None
        self._warned: set[tuple[str, int, str]] = set()  # (run, volume, warning) already said
        self._catch_up = CatchUp()  # which feedback is catch-up after a worker restart
        self._held: list[dict[str, Any]] = []  # the project's messages to the subject while catching up
        #: the worker's plugins, {"plugins": [...], "errors": [...]}, once it has listed its projects
        self.plugins: dict[str, list[dict[str, Any]]] = {"plugins": [], "errors": []}
        self._plugins_said: set[tuple[str, str, str, str]] = set()

    # --- links --------------------------------------------------------------------------
    def attach_worker(self, link: WorkerLink | None) -> None:
        self.worker = link

    def attach_subject(self, link: SubjectLink | None) -> None:
        self.subject = link

    def attach_afni(self, sink: VolumeSink | None) -> None:
        self.afni = sink

    # --- messages to observers ------------------------------------------------------------
    def info(self, text: str, source: str = "console") -> None:
        log.info("%s: %s", source, text)
        self.events.publish(ev.LogMessage("info", text, source))

    def warn(self, text: str, source: str = "console") -> None:
        log.warning("%s: %s", source, text)
        self.events.publish(ev.LogMessage("warning", text, source))

    def error(self, text: str, source: str = "console") -> None:
        log.error("%s: %s", source, text)
        self.events.publish(ev.LogMessage("error", text, source))

    def _set_state(self, state: ev.RunState, detail: str = "") -> None:
        self.state = state
        self.events.publish(ev.StateChanged(state, detail))

    def connection(self, name: str, state: LinkState, **kw: Any) -> None:
        """Links report their state through here so every observer sees it."""
        self.events.publish(ev.ConnectionChanged(name, state, **kw))

    # --- projects -----------------------------------------------------------------------
    async def list_projects(self) -> list[dict[str, Any]]:
        if self.worker is None:
            return []
        projects = await self.worker.list_projects()
        self.events.publish(ev.ProjectsListed(projects))
        self._report_plugins(self.worker.plugins)
        return projects

    def _report_plugins(self, found: Any) -> None:
        """Tell the operator, once each, which plugins the worker has and which failed to load (and why)."""
        if not isinstance(found, dict):
            return
        plugins = [p for p in found.get("plugins") or [] if isinstance(p, dict)]
        errors = [e for e in found.get("errors") or [] if isinstance(e, dict)]
        self.plugins = {"plugins": plugins, "errors": errors}
        for p in plugins:
            key = ("plugin", str(p.get("name")), str(p.get("kind")), str(p.get("source")))
            if key not in self._plugins_said:
                self._plugins_said.add(key)
                about = f": {p['description']}" if p.get("description") else ""
                self.info(f"plugin {p.get('name')} ({p.get('kind')}) from {p.get('source')}{about}", "worker")
        for e in errors:
            key = ("error", str(e.get("source")), str(e.get("error")), "")
            if key not in self._plugins_said:
                self._plugins_said.add(key)
                source = str(e.get("source") or "?")
                why = str(e.get("error") or "unknown error").removeprefix(f"{Path(source).name}: ")
                self.error(f"the plugin {source} could not be loaded, so it is not available: {why}. "
                           "Fix or remove it and restart the worker.", "worker")
        self.events.publish(ev.PluginsListed(plugins, errors))

    async def project_settings(self, project: str) -> list[dict[str, Any]]:
        if self.worker is None:
            return []
        declared = await self.worker.project_settings(project)
        self._declared[project] = list(declared)
        self.events.publish(ev.ProjectSettingsListed(project, declared))
        return declared

    # --- a run --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.state in (ev.RUNNING, ev.STOPPING)

    async def start_run(self, settings: RunSettings | None = None, watch_folder: Path | str | None = None) -> str:
        """Start watching and tell the worker and subject agent a run begins; returns the run id."""
        if self.running:
            raise RuntimeError(f"run {self.model.run} is still going: stop it before starting another")
        if settings is not None:
            self.settings = settings.validate()
        s = self.settings
        folder = Path(watch_folder or s.run.watch_folder or "")
        if not str(folder) or str(folder) == ".":
            raise settings_io.SettingsError("[run] watch_folder is empty: choose the scanner's export folder")
        if not folder.is_dir():
            raise settings_io.SettingsError(f"[run] watch_folder {folder} does not exist or is not a folder")
        run_id = s.run_id
        if (self.runs_dir / run_id).exists():
            raise settings_io.SettingsError(
                f"run {run_id} is already recorded in {self.runs_dir / run_id}: press Next run (or change the "
                "run number) so it is not mixed up with the earlier recording"
            )
        self._preflight(s)  # before anything starts: a run that cannot be recorded is refused whole
        preload = asyncio.ensure_future(asyncio.to_thread(_import_run_modules))  # beside the links' start
        self.watch_folder = folder
        self.model.reset(run_id)
        self._diag = Diagnostics(s.run.tr)
        self._run_tr = None
        self._ended = asyncio.Event()
        self._end_reason = ""
        self._files_seen = 0
        self._series = self._format = ""
        self._all_in_since = None
        self._warned = set()
        self._catch_up = CatchUp()
        self._held = []
        self._to_worker = asyncio.Queue()
        self._to_subject = asyncio.Queue()
        self.run_dir = self._save_settings(s)
        self.recorder = self._make_recorder(s)
        self._accepting = True
        self._set_state(ev.RUNNING, run_id)
        self.info(f"run {run_id} started; watching {folder}")

        # watch first: a file that lands while the worker starts the project waits in the queue
        self._tasks = [asyncio.create_task(self._tick(), name="console-tick")]
        if self._watcher_factory is default_watcher_factory:
            self._watcher = default_watcher_factory(folder, self.handle_volume, self.handle_watch_event,
                                                    polling=s.run.polling)
        else:
            self._watcher = self._watcher_factory(folder, self.handle_volume, self.handle_watch_event)
        try:
            await self._watcher.start()
        except Exception as exc:
            self.error(f"cannot watch {folder}: {exc}", "scanner")
            await self._teardown(f"cannot watch {folder}: {exc}")
            raise
        if self.worker is not None:
            try:
                started = await self.worker.start_run(run_id, s.project.name, dict(s.project.settings), s.run.tr)
                self._take_design(run_id, started)
            except Exception as exc:
                self.error(f"the worker refused to start the run: {exc}", "worker")
                await self._teardown(f"worker refused: {exc}")
                raise
        else:
            self.warn("no worker connected: volumes are shown and recorded but not analysed")
        if self.subject is not None:
            try:
                await self.subject.start_run(run_id, s.run.tr, s.feedback.onset, s.feedback.delay)
            except Exception as exc:
                self.error(f"the subject agent did not take the run start: {exc}", "subject")
        await preload  # done by now, usually: the worker took longer to load the project
        self._tasks += [
            asyncio.create_task(self._pump_worker(), name="console-to-worker"),
            asyncio.create_task(self._pump_subject(), name="console-to-subject"),
        ]
        self.info("ready: waiting for the scanner", "console")
        return run_id

    async def stop_run(self, reason: str = "stopped by the operator") -> ev.RunEnded | None:
        """End the run now (or after the pending volumes are sent); safe to call twice."""
        if self.state == ev.STOPPING and self._ending is not None:
            return await asyncio.shield(self._ending)  # already ending (end of scan): wait for it
        if self.state != ev.RUNNING:
            return self.last_ended
        return await self._teardown(reason)

    async def wait_ended(self, timeout: float | None = None) -> ev.RunEnded | None:
        await asyncio.wait_for(self._ended.wait(), timeout)
        return self.last_ended

    async def _teardown(self, reason: str) -> ev.RunEnded:
        """End the run in data order, so nothing in flight is lost: the watcher hands over what it
        holds, the worker gets every volume and returns its last feedback, the subject agent gets
        that feedback, then the recording is closed."""
        self._set_state(ev.STOPPING, reason)
        if self._watcher is not None:
            try:
                await self._watcher.stop()  # may still deliver held volumes (accepted while stopping)
            except Exception as exc:
                self.warn(f"the watcher did not stop cleanly: {exc}", "scanner")
            self._watcher = None
        self._accepting = False
        await self._finish_pump("console-to-worker", self._to_worker)
        if self.worker is not None:
            try:  # waits until the worker has every volume and has sent its last feedback
                await asyncio.wait_for(self.worker.stop_run(), 30.0)
            except Exception as exc:
                self.warn(f"could not tell the worker the run ended: {exc}", "worker")
        await self._finish_pump("console-to-subject", self._to_subject)
        if self.subject is not None:
            try:
                await asyncio.wait_for(self.subject.stop_run(), 10.0)
            except Exception as exc:
                self.warn(f"could not tell the subject agent the run ended: {exc}", "subject")
        for t in self._tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        unfinished = self._catch_up.unfinished()
        self._drop_held("the end of the run")
        if unfinished:
            self.warn(f"run {self.model.run}: {unfinished}", "worker")
            self._record(lambda r: r.record_event("worker_restarted", unfinished))
        await self._close_recorder(reason)
        self.last_summary = save_summary(self, reason)  # summary.json beside the recording, before RunEnded
        ended = ev.RunEnded(self.model.run, reason, self.model.volumes, self.model.feedbacks)
        self.last_ended = ended
        self._set_state(ev.ENDED, reason)
        caught = len(self._catch_up.answered - self._catch_up.shown)
        self.info(f"run {ended.run} ended ({reason}): {ended.volumes} volumes, {ended.feedback} feedback values"
                  + (f", catch-up feedback (not shown) for {caught} more" if caught else "")
                  + "".join(f"; {report}" for report in self._catch_up.reports))
        self.events.publish(ended)
        self._ended.set()
        return ended

    async def _finish_pump(self, name: str, queue: asyncio.Queue[Any]) -> None:
        """Let a pump send what is queued, then stop it."""
        queue.put_nowait(None)
        pumps = [t for t in self._tasks if t.get_name() == name and not t.done()]
        if pumps:
            done, pending = await asyncio.wait(pumps, timeout=10.0)
            if pending:
                self.warn(f"{name}: {queue.qsize()} item(s) not sent within 10 s", "console")

    async def close(self) -> None:
        """Stop any run and close every link."""
        if self.state in (ev.RUNNING, ev.STOPPING):
            await self.stop_run("console closing")
        for link in (self.worker, self.subject, self.afni):
            if link is not None:
                try:
                    await link.close()
                except Exception as exc:
                    log.warning("closing %r: %s", link, exc)

    # --- inbound: scanner ----------------------------------------------------------------
    def handle_volume(self, volume: Volume) -> None:
        """From the watcher: a complete volume. Quick; the sending happens in the pump task."""
        if not self._accepting:
            return
        now = self._clock()
        volume.timeline.stamp("parsed", now)
        if not self._series:
            self._series = volume.run
        volume.run = self.model.run
        self._use_run_tr(volume)
        self._format = str(volume.header.get("SourceFormat", self._format))
        self._diag.volume_arrived(now)
        self._catch_up.arrived(volume.index)
        # the data path first: the pump's send is scheduled before the views' work below
        self._to_worker.put_nowait(volume)
        if self.recorder is not None:
            self._record(lambda r: r.record_volume(volume))
        try:
            asyncio.get_running_loop().call_soon(self._show_volume, volume, now)
        except RuntimeError:  # called outside a loop (a test feeding volumes by hand)
            self._show_volume(volume, now)

    def _use_run_tr(self, volume: Volume) -> None:
        """On the first volume, compare the settings' TR with the headers' and say it when they differ; every
        volume then carries the run's TR (the project's ctx.tr follows volume.tr)."""
        r = self.settings.run
        if self._run_tr is None:
            choice = choose_tr(r.tr, volume.tr, r.tr_source, volume.source)
            self._run_tr = self._diag.tr = choice.tr
            if choice.message:
                self.warn(choice.message, "scanner")
                self._record_event("tr_differs", choice.message)
        if r.tr_source == "settings" or volume.tr is None:
            volume.tr = self._run_tr

    def _show_volume(self, volume: Volume, now: float) -> None:
        """Model, views and status for a volume (after it is on its way to the worker)."""
        first = self.model.volumes == 0
        self.model.add_volume(volume, now)
        if first:
            asyncio.ensure_future(self._place_roi(volume.shape, volume.affine))
        self.events.publish(ev.VolumeArrived(volume))
        self._publish_status(now)

    #: Watch events and how loudly to report them (anything else is "info").
    WATCH_LEVELS: dict[str, str] = {
        WatchKind.FILE_ERROR: "warning", WatchKind.GAVE_UP: "error", WatchKind.GAP: "warning",
        WatchKind.LATE: "warning", WatchKind.DUPLICATE: "info", WatchKind.NEW_RUN: "info", WatchKind.RUN_END: "info",
    }

    def handle_watch_event(self, event: WatchEvent) -> None:
        """From the watcher: new series, skipped files, gaps; turned into plain log lines."""
        kind, message, path = event.kind, event.message or str(event), event.path
        if kind == WatchKind.NEW_RUN:
            run = str(event.run or "")
            if self._series and run and run != self._series:
                self.warn(f"a new series started in the watch folder ({run}); stop this run and press Next run "
                          "to record it as its own run", "scanner")
            self._series = self._series or run
        level = self.WATCH_LEVELS.get(kind, "info")
        if kind == WatchKind.RUN_END and "missing:" in message:  # the end-of-run summary names volumes never received
            level = "warning"
        text = message if path is None or str(path) in message else f"{message} ({path})"
        self.events.publish(ev.LogMessage(level, text, "scanner"))
        if self.recorder is not None:
            self._record(lambda r: r.record_event(kind, message, path=str(path) if path else None))

    # --- inbound: worker and subject -----------------------------------------------------
    def handle_feedback(
        self, run: str, index: int, value: Any, metrics: dict[str, float | None] | None, timeline: Timeline
    ) -> None:
        """From the worker link: the result for one volume. Passed on to the subject agent."""
        if run and self.model.run and run != self.model.run:
            self.warn(f"feedback for another run ({run}, volume {index}) ignored", "worker")
            return
        timeline.stamp("feedback_received", self._clock())
        live_again = self._catch_up.active
        if self._catch_up.is_catch_up(index):  # after a worker restart: recorded, never passed on
            self._record(lambda r: r.record_event(
                "catch_up_feedback",
                f"feedback for volume {index} computed again after the worker restarted: catch-up, not shown",
                index=int(index), feedback=value, metrics=dict(metrics or {}), timeline=timeline.to_dict()))
            self._drop_held(f"volume {index}")
            return
        if live_again:
            report = self._catch_up.reports[-1]
            self.warn(f"run {self.model.run}: {report}", "worker")
            self._record(lambda r: r.record_event("worker_restarted", report))
            held, self._held = self._held, []
            for message in held:  # they came with this volume
                self.forward_subject_message(message)
        metrics = dict(metrics or {})
        self.model.add_feedback(index, value, metrics, timeline)
        self.events.publish(ev.FeedbackArrived(self.model.run, index, value, metrics, timeline))
        late = self._diag.check_analysis(index, timeline)
        if late is not None:
            self.events.publish(late)
            self.warn(late.message, "scanner" if late.kind == "scanner" else "worker")
        if self.recorder is not None:
            self._record(lambda r: r.record_feedback(self.model.run, index, value, metrics, timeline))
        if self.subject is not None and value is not None:
            self._to_subject.put_nowait((self.model.run, index, value, timeline))

    def handle_map(self, run: str, index: int, name: str, data: Any, affine: Any, peak: float | None = None) -> None:
        """From the worker link: a statistical map (the project's t-map); the model keeps the newest per name."""
        if run == self.model.run and self.model.add_map(name, index, data, affine, peak):
            self.events.publish(ev.MapArrived(run, index, name))

    def handle_delivery(self, run: str, index: int, timeline: Timeline, late: bool = False,
                        onset_missed: bool = False, outcome: str = "", taken_by: tuple[str, ...] = ()) -> None:
        """From the subject link: the agent (and its consumers) got a feedback value.

        The link reports each value several times (the agent's ack, then each consumer's take and
        display, with the stamps so far): the model counts it once and each warning is said once.
        Only a value a stimulus program took counts as delivered (``outcome``, see ev.Delivered)."""
        self.model.add_delivery(index, timeline, outcome)
        if self.recorder is not None:
            self._record(lambda r: r.record_timeline(run, index, timeline))
        self.events.publish(ev.Delivered(run, index, timeline, late, outcome, taken_by))
        if outcome == "no_consumer" and (run, -1, outcome) not in self._warned:
            self._warned.add((run, -1, outcome))
            self.warn(f"no stimulus program is connected to the subject agent: feedback for volume {index} "
                      "was not shown (said once per run; the run's summary lists every such volume)", "subject")
        planned = f"{self.settings.feedback.onset}, {self.settings.feedback.delay:g} s"
        warnings = (
            ("late", late, f"feedback for volume {index} reached the subject late (after a reconnect)"),
            ("onset_missed", onset_missed,
             f"feedback for volume {index} reached the subject after its planned onset ({planned}): shown at once"),
        )
        for kind, flag, text in warnings:
            key = (run, index, kind)
            if flag and key not in self._warned:
                self._warned.add(key)
                self.warn(text, "subject")

    def handle_response(self, response: dict[str, Any]) -> None:
        """From the subject link: a button press or rating; recorded and passed to the worker's project."""
        self.events.publish(ev.LogMessage("info", f"response from {response.get('consumer', 'the subject')}: "
                                          f"{response.get('data')}", "subject"))
        if self.recorder is not None:
            self._record(lambda r: r.record_response(response.get("data"), response.get("t"),
                                                     consumer=str(response.get("consumer", ""))))
        if self.worker is not None and self.state == ev.RUNNING:
            asyncio.ensure_future(self._forward_response(self.worker, response))

    async def _forward_response(self, worker: WorkerLink, response: dict[str, Any]) -> None:
        try:
            await worker.send_response(response)
        except Exception as exc:
            self.warn(f"a response could not be passed to the worker: {exc}", "worker")

    def forward_subject_message(self, message: dict[str, Any]) -> None:
        """The project's message to the subject display (an instruction, "rest", "run over").

        While a restarted worker catches up they are held: those that came with a catch-up volume (before
        its feedback) are recorded, not shown; those of the first live volume are passed on with it."""
        if self._catch_up.active:
            self._held.append(message)
            return
        if self.subject is None:
            self.info(f"to the subject (no agent connected): {message.get('text') or message}", "project")
            return
        asyncio.ensure_future(self._send_message(message))

    async def _send_message(self, message: dict[str, Any]) -> None:
        try:
            await self.subject.send_message(message)  # type: ignore[union-attr]
        except Exception as exc:
            self.warn(f"a message for the subject was not passed on: {exc}", "subject")

    def project_failed(self, run: str, message: str) -> None:
        """The worker reports the project crashed: this run gets no more feedback."""
        self.error(f"the project stopped with an error in run {run}: {message}. "
                   "Volumes are still recorded; fix the project and start a new run.", "worker")
        if self.recorder is not None:
            self._record(lambda r: r.record_event("project_failed", message))

    def _drop_held(self, what: str) -> None:
        """The project's messages that came with a catch-up volume: recorded and logged, not shown."""
        held, self._held = self._held, []
        for message in held:
            text = str(message.get("text") or message)
            log.info("project: not shown to the subject (catch-up, %s): %s", what, text)  # one per volume: journal only
            self._record_event("catch_up_message", text, content=message)

    def worker_restarting(self, run: str, info: dict[str, Any]) -> None:
        """The worker link found a worker that does not know the run (it restarted): catch up from now."""
        said = len(self._catch_up.reports)
        n = self._catch_up.restart()
        for report in self._catch_up.reports[said:]:  # it restarted again before it had caught up
            self.warn(f"run {run}: {report}", "worker")
            self._record_event("worker_restarted", report)
        self.warn(f"the worker restarted during run {run} (at volume {n}): starting the run again there with the "
                  f"same settings and replaying volumes 0..{n - 1} to it; their feedback is catch-up "
                  "(recorded, not shown to the subject)" if n else
                  f"the worker restarted during run {run} before its first volume: starting the run again there",
                  "worker")

    def _take_design(self, run: str, reply: dict[str, Any] | None) -> None:
        """The run's blocks from the worker's run-started reply, into the model before any volume (the
        timecourses shade the whole protocol from the start). A bad one is said and left out."""
        raw = (reply or {}).get("design")
        if raw is None or run != self.model.run:
            return
        try:
            design = Design.from_dict(raw)
        except ValueError as exc:
            self.warn(f"the project's design from the worker is not usable, so no blocks are shown ahead: {exc}",
                      "worker")
            return
        self.model.design = design
        self.events.publish(ev.DesignKnown(run, design.conditions, design.volumes))

    def worker_restarted(self, run: str, info: dict[str, Any]) -> None:
        """The run is started again on the new worker and its volumes are on their way (or could not be)."""
        self._take_design(run, info)  # the restarted project's blocks (the same settings: the same blocks)
        replayed, lost = list(info.get("replayed") or []), list(info.get("lost") or [])
        where = str(info.get("data_dir") or "")
        previous = str(info.get("previous_data_dir") or "")
        self.info(f"run {run} started again on the restarted worker; {len(replayed)} volume(s) replayed"
                  + (f" ({spans(replayed)})" if replayed else "")
                  + (f"; the worker saves it in {where}" if where else "")
                  + (f" (the lost worker's partial save: {previous})" if previous else ""), "worker")
        if lost:
            message = (f"volumes {spans(lost)} of run {run} could not be replayed to the restarted worker "
                       f"({info.get('why') or 'no record'}): the project never saw them, so its state misses "
                       f"{len(lost)} volume(s)")
            self.error(message, "worker")
            self._record(lambda r: r.record_event("replay_lost", message, volumes=lost))

    async def recorded_volumes(self, run: str, indices: list[int]) -> Mapping[int, Volume]:
        """Volumes of the run being recorded, read back from its recording (to replay them to a restarted
        worker). Raises LookupError if this run is not being recorded."""
        recorder, run_dir = self.recorder, self.run_dir
        if run != self.model.run or recorder is None or run_dir is None:
            raise LookupError(f"run {run} is not being recorded on this console")
        await asyncio.to_thread(recorder.drain)  # everything queued so far is on disk
        return await asyncio.to_thread(recorded_volumes, run_dir, run, indices)

    @property
    def restart_reports(self) -> list[str]:
        """One statement per worker restart during the current (or last) run."""
        return list(self._catch_up.reports)

    def handle_log(self, level: str, text: str, source: str) -> None:
        self.events.publish(ev.LogMessage(level if level in ("info", "warning", "error") else "info", text, source))

    def recorded(self, settings: RunSettings) -> bool:
        """Whether a run with these settings' id was already recorded here."""
        return (self.runs_dir / settings.run_id).exists()

    @property
    def declared_projects(self) -> set[str]:
        """Projects whose declared settings the worker has listed."""
        return set(self._declared)

    def project_values(self) -> dict[str, Any]:
        """The run's project settings: the project's declared defaults overlaid with the run's values."""
        values = {d["name"]: d.get("default") for d in self._declared.get(self.settings.project.name, [])}
        values.update(self.settings.project.settings)
        return values

    async def _place_roi(self, shape: tuple[int, int, int], affine: Any) -> None:
        """Draw the project's ROI (from its settings) over the live views, computed off the loop."""
        try:
            mask = await asyncio.to_thread(_roi_mask, self.project_values(), shape, affine)
        except Exception as exc:  # a wrong ROI is the project's to report; the overlay is only a view
            self.warn(f"the project's ROI cannot be drawn: {exc}", "console")
            return
        if mask is not None:
            self.model.roi_mask = mask
            self.events.publish(ev.RoiPlaced(int(mask.sum())))
            self.info(f"ROI of {int(mask.sum())} voxels drawn on the live views", "console")

    # --- pumps --------------------------------------------------------------------------
    async def _pump_worker(self) -> None:
        warned = False
        while True:
            volume = await self._to_worker.get()
            if volume is None:
                return
            if self.afni is not None:
                try:
                    await self.afni.send_volume(volume)
                except Exception as exc:  # AFNI must never stall the scanner path
                    self.warn(f"volume {volume.index} not sent to AFNI: {exc}", "afni")
            if self.worker is None:
                continue
            volume.timeline.stamp("sent", self._clock())
            try:
                await self.worker.send_volume(volume)
            except Exception as exc:
                if not warned:
                    self.error(f"volume {volume.index} could not be sent to the worker: {exc}", "worker")
                    warned = True

    async def _pump_subject(self) -> None:
        while True:
            item = await self._to_subject.get()
            if item is None or self.subject is None:
                return
            run, index, value, timeline = item
            try:
                await self.subject.send_feedback(run, index, value, timeline)
            except Exception as exc:
                log.debug("subject send failed", exc_info=True)
                self.error(f"feedback for volume {index} not passed to the subject agent: {exc}", "subject")

    async def _tick(self) -> None:
        """Status, lateness and the end-of-run conditions, every :data:`TICK` seconds."""
        s = self.settings.run
        ticks = 0
        while self.state == ev.RUNNING:
            now = self._clock()
            self._publish_status(now)
            ticks += 1
            if ticks % 10 == 0:
                self.refresh_links()
            expected = s.expected_volumes
            if expected and self.model.volumes >= expected:
                answered = max(self.model.feedbacks, len(self._catch_up.answered))  # live or catch-up
                waiting = self.worker is not None and answered < self.model.volumes
                if self._all_in_since is None:
                    self._all_in_since = now
                if not waiting or now - self._all_in_since > 2 * self._diag.tr + 5.0:
                    self._ending = asyncio.create_task(self._teardown(f"all {expected} volumes arrived"))
                    return
            else:
                late = self._diag.check_scanner(now)
                if late is not None:
                    self.events.publish(late)
                    self.warn(late.message, "scanner")
                gap = self._diag.since_last(now)
                if gap is not None and gap > s.end_after_trs * self._diag.tr:  # the run's TR (tr_check)
                    self._ending = asyncio.create_task(
                        self._teardown(f"no volume for {s.end_after_trs:g} TRs after the last")
                    )
                    return
            await asyncio.sleep(TICK)

    def refresh_links(self) -> None:
        """Ask each link to report its state again (round-trip times change)."""
        for link in (self.worker, self.subject):
            if link is not None:
                try:
                    link.refresh_status()
                except Exception as exc:
                    log.debug("refresh_status failed: %s", exc)

    def _publish_status(self, now: float) -> None:
        if self._watcher is not None:
            stats = self._watcher.stats
            self._files_seen = stats.files_seen
            self._format = stats.detected_format or self._format
        self.events.publish(
            ev.ScannerStatus(
                str(self.watch_folder or ""),
                max(self._files_seen, self.model.volumes),
                self.model.volumes,
                self._format,
                self._series,
                self._diag.since_last(now),
            )
        )

    # --- interrupted runs ------------------------------------------------------------------
    def interrupted_runs(self) -> list[tuple[Path, str]]:
        """Runs in the runs folder whose BIDS files were never written (a crash, a power cut), each
        with a one-line summary; the run being recorded now is not one of them. Each is logged."""
        found = []
        for run_dir in find_interrupted(self.runs_dir):
            if self.running and run_dir == self.run_dir:
                continue
            found.append((run_dir, summarize(run_dir)))
        for run_dir, summary in found:
            self.warn(f"interrupted run in {run_dir}: {summary}", "recording")
        return found

    async def finish_interrupted(self, run_dir: Path | str) -> Path:
        """Write an interrupted run's BIDS files from its journal (in a thread: it takes seconds)."""
        run_dir = Path(run_dir)
        if self.running and run_dir == self.run_dir:
            raise RuntimeError(f"{run_dir} is the run being recorded now")
        self.info(f"finishing the interrupted run in {run_dir}…", "recording")
        try:
            bold = await asyncio.to_thread(recover, run_dir)
        except Exception as exc:
            self.error(f"the interrupted run in {run_dir} could not be finished: {exc}", "recording")
            raise
        self.info(f"interrupted run finished: its BIDS files are in {bold.parent} ({bold.name})", "recording")
        return bold

    # --- settings and recording ------------------------------------------------------------
    def _preflight(self, s: RunSettings) -> None:
        """Refuse the run now if its folder cannot be written or has too little room (the recording's
        own check); the error is logged and raised, and no empty run folder is left behind."""
        if self._recorder_factory is None:
            return
        latest = self.model.latest  # the previous run's volume size, else a generous 2 MB
        volume_bytes = int(latest.data.nbytes) if latest is not None else DEFAULT_VOLUME_BYTES
        run_dir = self.runs_dir / s.run_id
        existed = run_dir.exists()
        try:
            found = preflight(run_dir, s.run.expected_volumes, volume_bytes)
        except Exception as exc:
            if not existed:
                with contextlib.suppress(OSError):
                    run_dir.rmdir()  # only if preflight made it and it is empty
            self.error(f"run {s.run_id} not started: {exc}", "recording")
            raise
        log.info("recording preflight: %s", found.summary())

    def _save_settings(self, s: RunSettings) -> Path | None:
        run_dir = self.runs_dir / s.run_id
        try:
            settings_io.save(s.without_secrets(), run_dir / "run.toml")  # a run's record holds no token
            return run_dir
        except OSError as exc:
            self.error(f"cannot save the run settings in {run_dir}: {exc}")
            return None

    def _make_recorder(self, s: RunSettings) -> Recorder | None:
        if self._recorder_factory is None or self.run_dir is None:
            return None
        try:
            return self._recorder_factory(s, self.run_dir, lambda text: self.error(text, "recording"))
        except Exception as exc:
            self.error(f"recording is off for this run: {exc}", "recording")
            return None

    def _record(self, write: Callable[[Recorder], Any]) -> None:
        """``write(recorder)``; a recorder that fails is reported and switched off for the rest of the run."""
        recorder = self.recorder
        if recorder is None:
            return
        try:
            write(recorder)
        except Exception as exc:
            self.error(f"recording failed: {exc}; recording is off for the rest of the run", "recording")
            self.recorder = None

    def _record_event(self, kind: str, message: str, **data: Any) -> None:
        """``recorder.record_event(kind, message, **data)`` through :meth:`_record` (binds the values now)."""
        self._record(lambda r: r.record_event(kind, message, **data))

    async def _close_recorder(self, reason: str) -> None:
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            return
        if self.model.volumes == 0 and not recorder.written_volumes:
            await self._discard_empty_run(recorder)
            return
        try:
            recorder.record_event("run_end", reason)
            self.info("writing the run as BIDS…", "recording")
            path = await recorder.afinish()
            self.info(f"run recorded: {path}", "recording")
        except Exception as exc:
            self.error(f"the run's recording could not be finished: {exc}", "recording")


    async def _discard_empty_run(self, recorder: Recorder) -> None:
        """A run stopped before its first volume recorded nothing: its folder (settings, an empty
        journal) is removed, so it is not offered as an interrupted run and its number stays free."""
        run_dir = self.run_dir
        try:
            await asyncio.to_thread(recorder.close)
            if run_dir is not None:
                await asyncio.to_thread(shutil.rmtree, run_dir)
        except Exception as exc:
            self.warn(f"the empty run folder {run_dir} could not be removed: {exc}", "recording")
            return
        self.info(f"no volume arrived, so nothing was recorded (run {self.model.run} can be used again)", "recording")


def _import_run_modules() -> None:
    """Import :data:`RUN_MODULES` (in a thread); a module that fails is reported where it is used."""
    for name in RUN_MODULES:
        try:
            importlib.import_module(name)
        except Exception:
            log.exception("cannot import %s ahead of the run", name)


def _roi_mask(values: dict[str, Any], shape: tuple[int, int, int], affine: Any) -> Any:
    """The ROI overlay's mask, in a thread (its module is imported there too, never on the loop)."""
    from rtcontrol.console.roi import roi_mask

    return roi_mask(values, shape, affine)


def default_watcher_factory(
    folder: Path, on_volume: Callable[[Volume], Any], on_event: Callable[[Any], Any], polling: bool = False
) -> Watcher:
    """The scanner watcher of ``rtcontrol.scanner.watcher``: file events, or listing for network shares."""
    return ScanWatcher(folder, on_volume, on_event, polling=polling, poll_interval=0.05 if polling else 0.01)


def default_recorder_factory() -> RecorderFactory:
    """The run recorder of ``rtcontrol.recording`` (journal + NIfTI as it happens, BIDS at the end)."""

    def factory(settings: RunSettings, run_dir: Path, on_error: Callable[[str], None]) -> Recorder:
        return RunRecorder(run_dir, settings.to_dict(), on_error=on_error, loop=asyncio.get_running_loop())

    return factory
