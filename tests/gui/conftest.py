"""GUI tests run offscreen with a qasync loop driven by the test (pytest-qt's qapp)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from rtcontrol.scanner.synth import SynthSpec, write_run
from tests.support.gui import VOLUMES


@pytest.fixture(scope="session")
def synth_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth-gui")
    write_run(SynthSpec(volumes=VOLUMES, tr=0.5, shape=(32, 32, 12), seed=5), out)
    return out


@pytest.fixture(autouse=True)
def _free_qt_objects_on_the_gui_thread(qapp: Any) -> Any:
    """After each GUI test (and after qtbot closed its widgets): delete what is left now, on this thread; left to
    the garbage collector, Qt objects could be freed from a worker thread of a later test (the recorder's, an
    asyncio.to_thread one) and crash it. Was test_operator's alone; a full tests/gui run still segfaulted in
    pytest-qt's teardown event processing (once in three runs under load)."""
    import gc

    from PySide6 import QtCore

    yield
    gc.collect()
    QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete.value)
    gc.collect()


@pytest.fixture
def qloop(qapp: Any) -> Any:
    """A qasync event loop on pytest-qt's QApplication; ``qloop.run(coro)`` runs a scenario."""
    import qasync

    qapp.setQuitOnLastWindowClosed(False)  # closing a test's window must not stop the loop
    loop = qasync.QEventLoop(qapp, already_running=False)
    asyncio.set_event_loop(loop)

    def run(coro: Awaitable[Any], timeout: float = 60.0) -> Any:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))

    loop.run = run  # type: ignore[attr-defined]
    yield loop
    loop.close()
    asyncio.set_event_loop(None)


