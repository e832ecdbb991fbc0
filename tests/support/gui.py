"""Helpers for GUI tests: a window on a session and a scan into its watch folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from PySide6 import QtCore

from rtcontrol.console import settings as S
from rtcontrol.console.session import ConsoleSession
from rtcontrol.gui.main_window import MainWindow

VOLUMES = 12


def _window(
    tmp_path: Path, settings: S.RunSettings | None = None, **session_kw: Any
) -> tuple[MainWindow, ConsoleSession]:
    session = ConsoleSession(settings or S.default_settings(), runs_dir=tmp_path / "runs",
                             worker_options={"in_process": True}, **session_kw)
    store = QtCore.QSettings(str(tmp_path / "layout.ini"), QtCore.QSettings.Format.IniFormat)
    window = MainWindow(session, settings_store=store)
    return window, session


def _scan(source: Path, watch: Path, index: int) -> None:
    f = sorted(p for p in source.iterdir() if p.suffix != ".json")[index]
    shutil.copyfile(f, watch / (f.name + ".part"))
    (watch / (f.name + ".part")).rename(watch / f.name)
