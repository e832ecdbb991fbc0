"""Decision 1: the core imports without Qt. Run in a subprocess where importing Qt fails."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import rtcontrol

QT_USERS = ("rtcontrol.gui", "rtcontrol.subject.display")


def core_modules() -> list[str]:
    names = []
    for m in pkgutil.walk_packages(rtcontrol.__path__, "rtcontrol."):
        if not m.name.startswith(QT_USERS):
            names.append(m.name)
    return names


def test_core_imports_with_qt_unavailable() -> None:
    modules = core_modules()
    assert "rtcontrol.scanner.volume" in modules
    code = (
        "import sys\n"
        "for blocked in ('PySide6', 'pyqtgraph', 'qasync', 'PyQt5', 'PyQt6'):\n"
        "    sys.modules[blocked] = None\n"
        "import importlib\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")
