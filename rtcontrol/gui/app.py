"""``python main.py``: the control-room console (PySide6 + pyqtgraph, one asyncio loop via qasync)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import TYPE_CHECKING

from rtcontrol.console import settings as settings_io
from rtcontrol.console.options import add_arguments, settings_from_args  # noqa: F401  (main.py's flags)
from rtcontrol.console.session import ConsoleSession

if TYPE_CHECKING:
    from rtcontrol.gui.main_window import MainWindow

log = logging.getLogger("rtcontrol.gui")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        settings = settings_from_args(args)
    except settings_io.SettingsError as exc:
        print(f"main.py: {exc}", file=sys.stderr)
        return 2
    import qasync  # qasync ships no type information (no py.typed)
    from PySide6 import QtWidgets

    from rtcontrol.gui import theme
    from rtcontrol.gui.main_window import MainWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    assert isinstance(app, QtWidgets.QApplication)  # instance() is typed as the QCoreApplication base
    app.setApplicationName("rtcontrol")
    app.setOrganizationName("rtcontrol")
    theme.apply(app)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    session = ConsoleSession(settings, demo=args.demo, demo_volumes=args.volumes, runs_dir=args.runs_dir,
                             demo_source=args.replay,
                             subject_display=True)
    window = MainWindow(session)
    session.on_unknown_host = window.trust_prompt
    window.show()
    app.setQuitOnLastWindowClosed(False)  # the loop must outlive the window: the session closes after it
    closed = asyncio.Event()
    window.closed.connect(closed.set)
    app.aboutToQuit.connect(closed.set)

    async def main() -> None:
        await open_session(window, session, start=args.demo or getattr(args, "start", False))
        await closed.wait()
        await session.close()  # stops a run that is still going, closes the links and local services

    with loop:
        loop.run_until_complete(main())
    return 0


async def open_session(window: MainWindow, session: ConsoleSession, *, start: bool) -> None:
    """Connect the links, fill the project list and (for the demo) start the first run."""
    c = session.controller
    try:
        await session.open()
        agent = session.embedded.get("subject")
        display = getattr(agent, "display", None)
        if display is not None:
            window.add_subject_view(display)
        projects = await c.list_projects()
        if projects:
            await c.project_settings(c.settings.project.name)
    except Exception as exc:
        c.error(f"could not connect: {exc}")
        window.offer_interrupted(session.interrupted)
        return
    window.offer_interrupted(session.interrupted)
    if start:
        window.start_run()
