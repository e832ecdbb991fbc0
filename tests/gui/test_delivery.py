"""The subject side reports each feedback value several times (the agent's ack, then the built-in
display's take and display): the console counts each value once and warns once per value."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from rtcontrol.console import events as ev
from rtcontrol.console import settings as S
from rtcontrol.gui.app import open_session
from tests.support.gui import VOLUMES, _scan, _window
from tests.support.wait import wait_until

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]


def test_each_value_counted_and_warned_once(qtbot: Any, qloop: Any, tmp_path: Path, synth_series: Path) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    s = S.default_settings()
    s = replace(s, run=replace(s.run, tr=0.5, expected_volumes=VOLUMES, watch_folder=str(watch)),
                project=S.ProjectSection("template", {"baseline": 2}),
                # a zero delay after acquisition is always already past: every value's onset is missed
                feedback=S.FeedbackSection("delay", 0.0))
    window, session = _window(tmp_path, s, subject_display=True)
    qtbot.addWidget(window)
    window.resize(800, 600)
    window.show()
    c = session.controller
    delivered: list[ev.Delivered] = []
    warnings: list[str] = []
    c.events.subscribe(lambda e: delivered.append(e) if isinstance(e, ev.Delivered) else None)
    c.events.subscribe(lambda e: warnings.append(e.text)
                       if isinstance(e, ev.LogMessage) and e.level == "warning" else None)

    async def scenario() -> None:
        await open_session(window, session, start=False)  # as the app does: the display docked in the window
        try:
            assert window.subject_view is not None
            assert c.subject is not None and c.worker is not None
            await session.start_run()
            for i in range(VOLUMES):
                _scan(synth_series, watch, i)
                await wait_until(lambda i=i: c.model.volumes > i, what=f"volume {i}")
            ended = await c.wait_ended(timeout=30)
            assert ended is not None
            # the display's reports arrive after the ack: wait until every value was displayed
            await wait_until(lambda: all(c.model.timeline(i).get("displayed") is not None for i in range(2, VOLUMES)),
                        what="every value displayed")
        finally:
            await session.close()

    qloop.run(scenario())
    window.close()
    qloop.run(asyncio.sleep(0.2))  # what the closing display schedules runs on this test's loop
    per_value = Counter(d.index for d in delivered)
    assert sorted(per_value) == list(range(2, VOLUMES))  # the template's baseline gives no feedback
    assert max(per_value.values()) >= 2, per_value  # several reports per value really happened
    assert c.model.delivered == VOLUMES - 2
    missed = Counter(w for w in warnings if "after its planned onset" in w)
    assert len(missed) == VOLUMES - 2 and set(missed.values()) == {1}, missed
