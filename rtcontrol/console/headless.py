"""``python main.py run``: a scan with the console controller; ``--no-gui`` runs it without a window.

Prints one line per volume (index, feedback, latency) and exits when the run ends: the
expected volumes arrived, no volume came for ``end_after_trs`` TRs after the last, or Ctrl-C.
At the end it prints the run's summary (the controller's ``last_summary``, already saved as ``summary.json``) and
draws ``summary.png`` beside it with Qt on the offscreen platform (no display needed).
Exit status: 0 when the run ended normally, 1 when volumes were lost (also one before the last) or errors
happened (or, with a subject agent given by address, a feedback value reached no stimulus program), 2 for
bad settings or a link that could not be reached.

Without a window nobody can approve a certificate seen for the first time: an unknown worker or
subject agent is refused before the token is sent, unless its fingerprint is given
(``--worker-fingerprint``/``--subject-fingerprint`` or ``fingerprint`` in the settings) or
``--trust-new`` pins it (ssh's ``accept-new``). A pinned certificate is accepted, a changed one refused.
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
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from rtcontrol.console import events as ev
from rtcontrol.console import options
from rtcontrol.console.session import ConsoleSession
from rtcontrol.console.settings import SettingsError
from rtcontrol.link.delivery import LinkState
from rtcontrol.link.pinning import PinRejected
from rtcontrol.paths import user_data_dir
from rtcontrol.recording.summary import SUMMARY_JSON, SUMMARY_PNG, RunSummary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_arguments(parser)  # the same flags as the window
    parser.add_argument("--no-gui", action="store_true", help="run without a window (scripted runs, remote tests)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    number = parser.add_mutually_exclusive_group()
    number.add_argument("--run", type=int, metavar="N", dest="run_number",
                        help="the run number (instead of [run] run in the settings)")
    number.add_argument("--next-run", action="store_true",
                        help="the first run number, from the settings' up, not yet recorded in the runs folder")
    parser.add_argument("--trust-new", action="store_true",
                        help="without a window: trust and pin a worker or subject agent certificate seen for the "
                             "first time (by default it is refused unless its fingerprint is given)")


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
    runs_dir = options.runs_folder(args)
    if not args.demo and not args.replay and (runs_dir / settings.run_id).exists():
        print(f"main.py run: run {settings.run_id} is already recorded in {runs_dir / settings.run_id}: give "
              "--next-run (the next run number not recorded yet) or --run N, so it is not mixed up with the "
              "earlier recording", file=sys.stderr)
        return 2
    session = ConsoleSession(settings, demo=args.demo, demo_volumes=args.volumes, runs_dir=args.runs_dir,
                             demo_source=args.replay)
    session.on_unknown_host = unknown_host_policy(session, trust_new=args.trust_new)
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
            if event.state is LinkState.FAILED:
                detail, url = event.detail, event.url
                failed[event.name] = detail if not url or url in detail else f"{url}: {detail}"
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


def unknown_host_policy(session: ConsoleSession, *, trust_new: bool) -> Callable[[str, str], bool]:
    """What a headless run does with a certificate it has never seen (see the module's doc)."""

    def decide(peer: str, fingerprint: str) -> bool:
        name = _link_of(peer, session.settings)
        if trust_new:
            where = session.known_hosts or user_data_dir() / "known_hosts"
            session.controller.warn(f"trusting {peer} on first use (--trust-new): {fingerprint}, pinned in {where}",
                                    name or "console")
            return True
        flag = f"--{name}-fingerprint" if name else "--worker-fingerprint / --subject-fingerprint"
        raise PinRejected(
            f"REFUSED: {peer} presented an unknown certificate, {fingerprint}; the token was not sent. If it is "
            f"the fingerprint 'main.py certs' printed on that machine, give {flag} {fingerprint}"
            + (f" (or [{name}] fingerprint in the settings)" if name else "") + ", or --trust-new to pin it")

    return decide


def _link_of(peer: str, settings: Any) -> str | None:
    """Which link (worker or subject) dials ``peer`` (``host:port``)."""
    for name in ("worker", "subject"):
        parts = urlsplit(getattr(settings, name).url)
        if parts.hostname and f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'wss' else 80)}" == peer:
            return name
    return None


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
        self._missed: set[int] = set()

    def __call__(self, event: Any) -> None:
        if isinstance(event, ev.LogMessage):
            if event.level == "error":
                self.errors += 1
            if not self.quiet or event.level == "error":
                level = f"{event.level}: " if event.level != "info" else ""
                self._line(f"[{event.source}] {level}{event.text}")
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
        if (isinstance(event, ev.Delivered) and not self.quiet and event.index not in self._missed
                and event.outcome in ("no_consumer", "dropped", "cancelled")):
            self._missed.add(event.index)
            why = {"no_consumer": "no stimulus program connected", "dropped": "no stimulus program took it",
                   "cancelled": "cancelled, the run stopped before its onset"}[event.outcome]
            self._line(f"volume {event.index:4d}  feedback NOT shown: {why}")
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
        summary = c.last_summary
        missing = len(summary.missing) if summary is not None else 0  # also those before the last volume
        for report in c.restart_reports:  # a worker restarted mid-run: what was shown, what not
            print(f"run {m.run}: {report}", file=self.out, flush=True)
        print(
            f"run {m.run}: {m.volumes} volumes, {m.feedbacks} feedback values, {m.delivered} delivered to a "
            f"stimulus program{f', {lost} of {expected} volumes missing' if lost else ''}; "
            f"ended: {ended.reason if ended else 'not started'}"
            + (f"; settings and recording in {c.run_dir}" if c.run_dir else ""),
            file=self.out,
            flush=True,
        )
        # only what the subject agent confirmed a stimulus program took counts as delivered; the rest is named
        undelivered = c.subject is not None and bool(m.undelivered())
        if c.subject is not None and m.valued:
            print(f"feedback: {m.delivery_report()}", file=self.out, flush=True)
        lost_feedback = undelivered and bool(c.settings.subject.url)  # an agent given by address must show it
        self._run_summary(summary, c.run_dir)
        return 1 if lost or missing or self.errors or ended is None or lost_feedback else 0

    def _run_summary(self, summary: RunSummary | None, run_dir: Path | None) -> None:
        """The end-of-run summary (as saved in summary.json), and its timecourses drawn as summary.png."""
        if summary is None:
            return
        print("summary:", file=self.out)
        for line in summary.text(restarts=False):  # each restart is said just above
            print(f"  {line}", file=self.out)
        if run_dir is None or not (run_dir / SUMMARY_JSON).is_file():
            print("  not saved: the run was not recorded", file=self.out, flush=True)
            return
        saved = [str(run_dir / SUMMARY_JSON)]
        try:  # Qt draws it, on the offscreen platform (no display needed); loaded only here, as the window is
            plot = importlib.import_module("rtcontrol.gui.summary_plot")
            saved.append(str(plot.write_png(summary, run_dir / SUMMARY_PNG)))
        except Exception as exc:
            print(f"  {SUMMARY_PNG} not written: {exc}", file=self.out)
        print(f"  saved: {', '.join(saved)}", file=self.out, flush=True)
