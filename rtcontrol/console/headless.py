"""``python main.py run``: a scan with the console controller; ``--no-gui`` runs it without a window.

Prints one line per volume (index, feedback, latency) and exits when the run ends: the
expected volumes arrived, no volume came for ``end_after_trs`` TRs after the last, or Ctrl-C.
Exit status: 0 when the run ended normally, 1 when volumes were lost or errors happened, 2 for
bad settings or a link that could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import math
import shlex
import signal
import sys
from dataclasses import replace
from typing import Any, TextIO

from rtcontrol.console import events as ev
from rtcontrol.console import options
from rtcontrol.console.session import ConsoleSession
from rtcontrol.console.settings import SettingsError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_arguments(parser)  # the same flags as the window
    parser.add_argument("--no-gui", action="store_true", help="run without a window (scripted runs, remote tests)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")


def run(args: argparse.Namespace) -> int:
    if not args.no_gui:
        app = importlib.import_module("rtcontrol.gui.app")  # the window only when asked for
        args.start = True  # "run" starts the scan at once, in the window too
        return int(app.run(args))
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s: %(message)s")
    console_log = logging.getLogger("rtcontrol.console")
    console_log.propagate = False  # the printer shows the console's own messages once
    console_log.addHandler(logging.NullHandler())
    try:
        settings = options.settings_from_args(args)
    except SettingsError as exc:
        print(f"main.py run: {exc}", file=sys.stderr)
        return 2
    if not args.demo and not args.replay and not settings.run.watch_folder:
        print("main.py run: no watch folder: give --watch DIR, set [run] watch_folder, or use --demo "
              "(or --replay SERIES) for a simulated scan", file=sys.stderr)
        return 2
    if args.demo and args.volumes:
        settings = replace(settings, run=replace(settings.run, expected_volumes=args.volumes))
    session = ConsoleSession(settings, demo=args.demo, demo_volumes=args.volumes, runs_dir=args.runs_dir,
                             demo_source=args.replay)
    try:
        return asyncio.run(run_session(session, quiet=args.quiet))
    except KeyboardInterrupt:
        return 1


async def run_session(session: ConsoleSession, *, quiet: bool = False, out: TextIO = sys.stdout) -> int:
    """Open the session, run one scan to its end, print progress; the exit status."""
    printer = Printer(out, quiet, session.controller.model)
    unsubscribe = session.controller.events.subscribe(printer)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    failed: dict[str, str] = {}

    def note_failed_link(event: Any) -> None:
        if isinstance(event, ev.ConnectionChanged) and event.name in ("worker", "subject"):
            if event.state == "failed":
                failed[event.name] = str(getattr(event, "detail", "") or "")
            else:
                failed.pop(event.name, None)

    unsubscribe_links = session.controller.events.subscribe(note_failed_link)
    try:
        try:
            await session.open()
            unsubscribe_links()
            if failed:  # a scripted run does not start half-connected: say which link and why
                for name, detail in failed.items():
                    print(f"main.py run: the {name} link could not be opened: {detail}", file=out)
                return 2
            if session.interrupted:
                _print_interrupted(session, out)
            await session.start_run()
        except Exception as exc:
            print(f"main.py run: {exc}", file=out)
            return 2
        ended = asyncio.create_task(session.controller.wait_ended())
        interrupted = asyncio.create_task(stop.wait())
        await asyncio.wait({ended, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        if not ended.done():
            print("interrupted: stopping the run", file=out)
            await session.stop_run("interrupted (Ctrl-C)")
        interrupted.cancel()
        result = session.controller.last_ended
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
        await session.close()
        unsubscribe()
    return printer.summary(session, result)


def _print_interrupted(session: ConsoleSession, out: TextIO) -> None:
    """Runs an earlier session left unfinished, and the command that writes their BIDS files."""
    runs_dir = session.controller.runs_dir
    print(f"{len(session.interrupted)} interrupted run(s) in {runs_dir} (BIDS files not written yet):", file=out)
    for run_dir, summary in session.interrupted:
        print(f"  {run_dir.name}: {summary}", file=out)
    print(f"finish them with: {shlex.quote(sys.executable)} -m rtcontrol.recording finish {shlex.quote(str(runs_dir))}",
          file=out)


class Printer:
    """Turns controller events into terminal lines."""

    def __init__(self, out: TextIO, quiet: bool, model: Any = None) -> None:
        self.out, self.quiet, self.model = out, quiet, model
        self.errors = 0
        self._links: dict[str, tuple[str, str]] = {}
        self._delivered: set[int] = set()

    def __call__(self, event: Any) -> None:
        if isinstance(event, ev.LogMessage):
            if event.level == "error":
                self.errors += 1
            if not self.quiet or event.level == "error":
                self._line(f"[{event.source}] {event.level if event.level != 'info' else ''}{': ' if event.level != 'info' else ''}{event.text}")
        elif isinstance(event, ev.FeedbackArrived) and not self.quiet:
            took = event.timeline.between("file_seen", "feedback_received")
            value = event.value if not isinstance(event.value, float) else round(event.value, 4)
            self._line(f"volume {event.index:4d}  feedback {value!s:>10}  "
                       f"{'' if took is None else f'{took * 1e3:7.1f} ms file→feedback'}")
        elif isinstance(event, ev.Delivered) and not self.quiet and event.index not in self._delivered:
            self._delivered.add(event.index)
            timeline = self.model.timeline(event.index) if self.model is not None else event.timeline
            took = timeline.between("file_seen", "subject_delivered")
            if took is not None and not math.isnan(took):
                self._line(f"volume {event.index:4d}  at the subject agent {took * 1e3:7.1f} ms after the file"
                           + ("  (late)" if event.late else ""))
        elif isinstance(event, ev.ConnectionChanged) and not self.quiet:
            key = (event.state, event.url)
            if self._links.get(event.name) != key:  # RTT refreshes repeat the state: print changes only
                self._links[event.name] = key
                self._line(f"[{event.name}] {event.state} {event.url} {event.detail}".rstrip())

    def _line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def summary(self, session: ConsoleSession, ended: ev.RunEnded | None) -> int:
        c = session.controller
        m = c.model
        expected = c.settings.run.expected_volumes
        lost = max(0, expected - m.volumes) if expected else 0
        for report in getattr(c, "restart_reports", ()):  # a worker restarted mid-run: what was shown, what not
            print(f"run {m.run}: {report}", file=self.out, flush=True)
        print(
            f"run {m.run}: {m.volumes} volumes, {m.feedbacks} feedback values, {m.delivered} delivered to the subject"
            f"{f', {lost} of {expected} volumes missing' if lost else ''}; "
            f"ended: {ended.reason if ended else 'not started'}"
            + (f"; settings and recording in {c.run_dir}" if c.run_dir else ""),
            file=self.out,
            flush=True,
        )
        return 1 if lost or self.errors or ended is None else 0
