"""The Scanner panel's FD: the newest, the largest and the count over the threshold, as numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rtcontrol.console import events as ev
from rtcontrol.console.model import RunModel
from rtcontrol.gui.scanner_panel import ScannerPanel, fd_numbers
from rtcontrol.scanner.volume import Timeline
from tests.support.gui import _window

pytestmark = [pytest.mark.gui, pytest.mark.timeout(60)]


def test_fd_numbers() -> None:
    assert fd_numbers(np.empty(0), 0.5) == (None, None, 0)
    assert fd_numbers(np.array([0.1, np.nan, 0.7, 0.5, 0.9, 0.3]), 0.5) == (0.3, 0.9, 2)  # 0.5 is not over
    assert fd_numbers(np.array([0.2, np.nan]), 0.5) == (0.2, 0.2, 0)


def test_scanner_panel_shows_fd_against_the_threshold(qtbot: Any) -> None:
    model = RunModel()
    panel = ScannerPanel(model)
    qtbot.addWidget(panel)
    panel.refresh()
    assert panel.fd.text() == "—" and panel.fd_detail.text() == "threshold 0.5 mm"
    for i, fd in enumerate([0.0, 0.7, 0.2, 0.9, 0.3]):
        model.add_feedback(i, 0.5, {"fd": fd}, Timeline())
        panel.on_event(ev.FeedbackArrived("r", i, 0.5, {"fd": fd}, Timeline()))
    panel.refresh()
    assert panel.fd.text() == "0.30 mm" and panel.fd.objectName() == "big"
    assert panel.fd_detail.text() == "max 0.90 mm · 2 over 0.5 mm" and panel.fd_detail.objectName() == "warn"
    panel.set_fd_threshold(0.25)
    panel.refresh()
    assert panel.fd.objectName() == "warn"  # the newest volume is over the threshold
    assert panel.fd_detail.text() == "max 0.90 mm · 3 over 0.25 mm"


def test_the_windows_fd_threshold_reaches_the_scanner_panel(qtbot: Any, tmp_path: Path) -> None:
    window, _session = _window(tmp_path)
    qtbot.addWidget(window)
    model = window.controller.model
    for i, fd in enumerate([0.1, 0.6, 0.4]):
        model.add_feedback(i, 0.5, {"fd": fd}, Timeline())
    window.on_event(ev.FeedbackArrived("r", 2, 0.5, {"fd": 0.4}, Timeline()))
    window.refresh()
    assert window.scanner.fd_detail.text() == "max 0.60 mm · 1 over 0.5 mm"
    window.set_display(fd_threshold=0.3)
    window.refresh()
    assert window.scanner.fd_detail.text() == "max 0.60 mm · 2 over 0.3 mm"
    assert window.timecourses.fd_threshold == 0.3
    window.close()


def test_a_long_watch_folder_is_one_line_shortened_in_the_middle(qtbot: Any) -> None:
    panel = ScannerPanel()
    qtbot.addWidget(panel)
    panel.resize(260, 300)
    panel.show()
    qtbot.waitExposed(panel)
    folder = "/mnt/scanner/export/2026-12-05/sub-01/series-007-ep2d-bold-feedback"
    panel.set_run(0.5, 0, folder)
    panel.refresh()
    shown = panel.folder.shown_text()
    assert shown != folder and "…" in shown and shown.startswith("/mnt") and shown.endswith("feedback")
    assert panel.folder.toolTip() == folder
    assert panel.folder.height() < 2 * panel.folder.fontMetrics().height()  # one line, not a cut second one
