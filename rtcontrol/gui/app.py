"""``python main.py``: the control-room console (PySide6 + pyqtgraph, one asyncio loop via qasync)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import replace
from pathlib import Path

from rtcontrol.console import settings as settings_io
from rtcontrol.console.session import ConsoleSession
from rtcontrol.console.settings import RunSettings

log = logging.getLogger("rtcontrol.gui")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--demo", action="store_true", help="start a simulated scan at once (local worker and subject agent)")
    parser.add_argument("--worker", metavar="URL", help="worker address, wss://host:port (default: start one on this machine)")
    parser.add_argument("--worker-token", metavar="TOKEN", help="access token for the worker")
    parser.add_argument("--subject", metavar="URL", help="subject agent address, wss://host:port (default: start one here)")
    parser.add_argument("--subject-token", metavar="TOKEN", help="access token for the subject agent")
    parser.add_argument("--settings", metavar="FILE", type=Path, help="run settings (TOML); default resources/default_run.toml")
    parser.add_argument("--watch", metavar="DIR", type=Path, help="the scanner's export folder to watch")
    parser.add_argument("--volumes", type=int, help="volumes in the simulated scan (with --demo)")
    parser.add_argument("--runs-dir", type=Path, help="where run settings and recordings go (default ./runs)")


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """Settings file (or defaults) with the command-line addresses and folder laid over it."""
    s = settings_io.load(args.settings) if getattr(args, "settings", None) else settings_io.default_settings()
    if getattr(args, "worker", None):
        s = replace(s, worker=replace(s.worker, url=args.worker))
    if getattr(args, "worker_token", None):
        s = replace(s, worker=replace(s.worker, token=args.worker_token))
    if getattr(args, "subject", None):
        s = replace(s, subject=replace(s.subject, url=args.subject))
    if getattr(args, "subject_token", None):
        s = replace(s, subject=replace(s.subject, token=args.subject_token))
    if getattr(args, "watch", None):
        s = replace(s, run=replace(s.run, watch_folder=str(args.watch)))
    return s.validate()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        settings = settings_from_args(args)
    except settings_io.SettingsError as exc:
        print(f"main.py: {exc}", file=sys.stderr)
        return 2
    import qasync
    from PySide6 import QtWidgets

    from rtcontrol.gui import theme
    from rtcontrol.gui.main_window import MainWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    app.setApplicationName("rtcontrol")
    app.setOrganizationName("rtcontrol")
    theme.apply(app)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    session = ConsoleSession(settings, demo=args.demo, demo_volumes=args.volumes, runs_dir=args.runs_dir)
    window = MainWindow(session)
    session.on_unknown_host = window.trust_prompt
    window.show()
    closed = asyncio.Event()
    app.aboutToQuit.connect(closed.set)

    async def main() -> None:
        await open_session(window, session, start=args.demo)
        await closed.wait()
        await session.close()

    with loop:
        loop.run_until_complete(main())
    return 0


async def open_session(window: object, session: ConsoleSession, *, start: bool) -> None:
    """Connect the links, fill the project list and (for the demo) start the first run."""
    c = session.controller
    try:
        await session.open()
        projects = await c.list_projects()
        if projects:
            await c.project_settings(c.settings.project.name)
    except Exception as exc:
        c.error(f"could not connect: {exc}")
        return
    if start:
        window.start_run()  # type: ignore[attr-defined]
