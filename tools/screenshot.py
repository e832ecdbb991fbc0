"""``python -m tools.screenshot [--out FILE]``: a picture of the console in the middle of a demo run.

Runs the real demo (embedded worker and subject agent, simulated scanner), waits until ``--after``
volumes have been analysed and delivered, and saves the window as PNG. Without an X display it
renders offscreen; under ``xvfb-run`` the picture is what a screen shows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.screenshot", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("screenshots/console.png"), help="PNG to write")
    parser.add_argument("--after", type=int, default=40, help="take the picture once this many volumes arrived")
    parser.add_argument("--volumes", type=int, default=120, help="volumes in the simulated run")
    parser.add_argument("--tr", type=float, default=0.5, help="TR of the simulated run (s)")
    parser.add_argument("--size", default="1600x1000", help="window size WxH")
    parser.add_argument("--timeout", type=float, default=180.0, help="give up after this many seconds")
    args = parser.parse_args(argv)
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    import qasync
    from PySide6 import QtCore, QtWidgets

    from rtcontrol.console import settings as settings_io
    from rtcontrol.console.session import ConsoleSession
    from rtcontrol.gui import theme
    from rtcontrol.gui.app import open_session
    from rtcontrol.gui.main_window import MainWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    theme.apply(app)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    s = settings_io.demo_settings()
    s = s.with_values("run", tr=args.tr, expected_volumes=args.volumes)
    with tempfile.TemporaryDirectory(prefix="rtcontrol-shot-") as tmp:
        session = ConsoleSession(s, demo=True, demo_volumes=args.volumes, runs_dir=Path(tmp) / "runs",
                                 subject_display=True)
        store = QtCore.QSettings(str(Path(tmp) / "layout.ini"), QtCore.QSettings.Format.IniFormat)
        window = MainWindow(session, settings_store=store)
        w, h = (int(v) for v in args.size.lower().split("x"))
        window.resize(w, h)
        window.show()
        c = session.controller

        async def shoot() -> Path:
            await open_session(window, session, start=True)
            while c.model.delivered < args.after - 5 or c.model.volumes < args.after:
                if c.state == "ended":
                    raise RuntimeError(f"the run ended before {args.after} volumes: {c.last_ended}")
                await asyncio.sleep(0.05)
            window.refresh()
            window.slices.read_voxel("axial", 30.5, 34.5)
            await asyncio.sleep(0.3)
            window.refresh()
            args.out.parent.mkdir(parents=True, exist_ok=True)
            if not window.grab().save(str(args.out), "PNG"):
                raise RuntimeError(f"could not write {args.out}")
            await session.close()
            return args.out

        with loop:
            out = loop.run_until_complete(asyncio.wait_for(shoot(), args.timeout))
        window.close()
    print(f"screenshot written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
