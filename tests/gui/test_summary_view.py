"""The window shows the end-of-run summary when a run ends, without blocking the next run, and again from
View > Last run summary."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PySide6 import QtGui

from rtcontrol.console import settings as S
from tests.support.gui import VOLUMES, _scan, _window
from tests.support.wait import wait_until

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]

LEFT_OUT = 3


def test_the_summary_is_shown_when_a_run_ends_and_can_be_opened_again(
        qtbot: Any, qloop: Any, tmp_path: Path, synth_series: Path) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    s = S.default_settings()
    s = replace(s, run=replace(s.run, tr=0.5, expected_volumes=VOLUMES, end_after_trs=3, watch_folder=str(watch)),
                project=S.ProjectSection("template", {"baseline": 2}))
    window, session = _window(tmp_path, s)
    qtbot.addWidget(window)
    window.resize(1366, 768)
    window.show()
    c = session.controller
    assert not window.summary.action.isEnabled()  # no run yet: nothing to show

    async def scenario() -> None:
        await session.open()
        try:
            await session.start_run()
            for i in range(VOLUMES):
                if i != LEFT_OUT:
                    _scan(synth_series, watch, i)
                    await asyncio.sleep(0.05)
            await c.wait_ended(timeout=60)
            await wait_until(lambda: window.summary.dialog is not None and window.summary.dialog.isVisible(),
                             what="the summary shown at the run's end")
            dialog = window.summary.dialog
            assert dialog is not None
            await asyncio.sleep(0.2)
            shots = os.environ.get("RTCONTROL_SHOTS")
            if shots:  # for a person to look at (see tools/screenshot.py)
                dialog.grab().save(str(Path(shots) / "summary-window-dialog.png"))
                window.grab().save(str(Path(shots) / "summary-window.png"))
            # not modal: the next run starts with the summary still open
            assert not dialog.isModal()
            window.setup.set_settings(c.settings.next_run())
            task = window.start_run()
            assert task is not None
            await task
            assert c.running and dialog.isVisible()
            await session.stop_run()
        finally:
            await session.close()

    qloop.run(scenario())
    dialog = window.summary.dialog
    assert dialog is not None
    run_dir = tmp_path / "runs" / s.run_id
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["missing"] == [LEFT_OUT] and saved["received"] == VOLUMES - 1
    facts = dialog.facts.text()
    assert f"volumes: {VOLUMES - 1} received of {VOLUMES} expected; MISSING 1: volume {LEFT_OUT}" in facts, facts
    assert "latency ms (median/p99): watch" in facts and "VOLUMES MISSING" in dialog.heading.text()
    assert "summary.json and summary.png" in dialog.saved.text()
    image = QtGui.QImage(str(run_dir / "summary.png"))
    assert (image.width(), image.height()) == (1200, 900)
    assert not dialog.picture.pixmap().isNull()
    # the second run was stopped before its first volume: the first run's summary stays the one shown
    dialog.close()
    assert window.summary.action.isEnabled() and "Last run summary" in window.summary.action.text()
    window.summary.action.trigger()
    assert dialog.isVisible() and f"MISSING 1: volume {LEFT_OUT}" in dialog.facts.text()
    window.close()
