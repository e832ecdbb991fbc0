"""A console session: the controller with its links, embedded services and the demo scan.

Without addresses it starts a worker and a subject agent on loopback; with ``demo`` it
writes a synthetic run once and replays it into a fresh temporary watch folder for every
run, so one command gives a live run. The GUI and the headless runner both use this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from rtcontrol.console import links, simulator
from rtcontrol.console.controller import ConsoleController
from rtcontrol.console.settings import RunSettings

log = logging.getLogger("rtcontrol.console")

DEMO_VOLUMES = 120
DEMO_TR = 1.0


class ConsoleSession:
    def __init__(
        self,
        settings: RunSettings,
        *,
        demo: bool = False,
        demo_volumes: int | None = None,
        demo_source: Path | None = None,
        runs_dir: Path | None = None,
        on_unknown_host: Any = None,
        known_hosts: Path | None = None,
        subject_display: bool = False,
        worker_options: dict[str, Any] | None = None,
    ) -> None:
        if demo or not settings.run.watch_folder:  # no export folder: the simulated scanner feeds the runs
            settings = _demo_settings(settings, demo_volumes, replaying=demo_source is not None)
        self.demo = demo  # start the first run at once
        self.demo_source = demo_source
        self.controller = ConsoleController(settings, runs_dir=runs_dir)
        self.on_unknown_host = on_unknown_host
        self.known_hosts = known_hosts
        self.subject_display = subject_display
        self._stack = contextlib.AsyncExitStack()
        self._tmp: Path | None = None
        self._replay: asyncio.Task[Any] | None = None
        self._synth: dict[int, asyncio.Task[Path]] = {}
        self._runs = 0
        self.embedded: dict[str, Any] = {}
        #: Runs left unfinished by an earlier session (run folder, summary), found by :meth:`open`.
        self.interrupted: list[tuple[Path, str]] = []
        #: Passed to ``local_worker`` for the embedded worker (tests use ``in_process=True``).
        self.worker_options: dict[str, Any] = dict(worker_options or {})

    @property
    def settings(self) -> RunSettings:
        return self.controller.settings

    async def open(self) -> None:
        """Start embedded services where no address is given, then connect every link."""
        c = self.controller
        s = c.settings
        await self._stack.__aenter__()
        self.interrupted = c.interrupted_runs()  # an earlier session's crash: offered to finish
        self._tmp = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="rtcontrol-")))
        if not s.run.watch_folder:
            what = self.demo_source.name if self.demo_source else f"a synthetic run of {s.run.expected_volumes} volumes"
            c.info(f"no watch folder is set: Start replays a simulated scan ({what}, TR {s.run.tr:g} s). "
                   "For a real scan, choose the scanner's export folder in Run setup.", "scanner")
            if self.demo_source is None:  # write the synthetic scan while the links come up
                self._synthetic(s.run.expected_volumes)
        await links.connect_all(self, self._stack)

    async def start_run(self, settings: RunSettings | None = None) -> str:
        """Start a run; in the demo, also start the simulated scanner into a fresh folder."""
        c = self.controller
        if settings is not None:
            c.settings = settings.validate()
        watch: Path | None = None
        simulated = not c.settings.run.watch_folder
        if simulated and c.recorded(c.settings):  # a simulated scan takes the next free run number
            s = c.settings
            while c.recorded(s):
                s = s.next_run()
            c.info(f"run {c.settings.run.run} of this subject is already recorded: the simulated scan is run "
                   f"{s.run.run}", "console")
            c.settings = s
        if simulated:
            if self._tmp is None:
                raise RuntimeError("the session is not open")
            self._runs += 1
            watch = self._tmp / f"watch-{self._runs:03d}"
            watch.mkdir()
        if c.worker is not None and c.settings.project.name not in c.declared_projects:
            try:  # the project's declared defaults (the ROI overlay reads them)
                await c.project_settings(c.settings.project.name)
            except Exception as exc:
                c.warn(f"the worker did not list the settings of {c.settings.project.name}: {exc}", "worker")
        run_id = await c.start_run(watch_folder=watch)
        if simulated and watch is not None:
            self._replay = asyncio.create_task(self._demo_scan(watch), name="demo-scanner")
        return run_id

    async def stop_run(self, reason: str = "stopped by the operator") -> None:
        await self._stop_replay()
        await self.controller.stop_run(reason)

    async def _demo_scan(self, watch: Path) -> None:
        c = self.controller
        try:
            source = self.demo_source or await self._synthetic(c.settings.run.expected_volumes)
            c.info(f"simulated scanner: replaying {source.name} into {watch} at TR {c.settings.run.tr:g} s", "scanner")
            await simulator.replay(source, watch, c.settings.run.tr)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            c.error(f"the simulated scanner stopped: {exc}", "scanner")

    def _synthetic(self, volumes: int) -> asyncio.Task[Path]:
        """The synthetic series of this length (written once, in a thread; shared by every run asking for it)."""
        n = volumes or DEMO_VOLUMES
        task = self._synth.get(n)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = asyncio.ensure_future(self._write_synthetic(n))
            self._synth[n] = task
        return task

    async def _write_synthetic(self, n: int) -> Path:
        assert self._tmp is not None
        out = self._tmp / f"synthetic-{n}"
        tr = self.controller.settings.run.tr
        self.controller.info(f"writing a synthetic run of {n} volumes for the simulated scanner", "scanner")
        await asyncio.to_thread(simulator.synthesize, out, n, tr)
        return simulator.series_folder(out)

    async def _stop_replay(self) -> None:
        task, self._replay = self._replay, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def close(self) -> None:
        await self._stop_replay()
        for task in self._synth.values():
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        try:
            await self.controller.close()
        finally:
            await self._stack.aclose()


def _demo_settings(settings: RunSettings, volumes: int | None, replaying: bool = False) -> RunSettings:
    """A simulated scan: TR 1 s unless set, 120 synthetic volumes (a replayed series ends when it ends)."""
    r = settings.run
    n = volumes or r.expected_volumes or (0 if replaying else DEMO_VOLUMES)
    tr = r.tr if r.tr and r.tr != 2.0 else DEMO_TR
    # a replayed series comes at this TR whatever its headers say: the run uses it (said on the first volume)
    source = "settings" if replaying else r.tr_source
    return replace(settings, run=replace(r, expected_volumes=n, tr=tr, end_after_trs=max(r.end_after_trs, 5.0),
                                         watch_folder="", tr_source=source))
