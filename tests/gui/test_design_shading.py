"""The timecourses shade the project's whole design from the run's start (issue 13): every block, the x axis
over the protocol, the condition names as a legend, before the first volume; real embedded worker and
roi_feedback behind the window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6 import QtCore, QtWidgets

from rtcontrol.console import events as ev
from rtcontrol.console import settings as S
from rtcontrol.console.model import RunModel
from rtcontrol.gui.app import open_session
from rtcontrol.gui.timecourse_panel import TimecoursePanel
from rtcontrol.project import Block, Design
from rtcontrol.scanner.synth import SynthSpec, write_run
from rtcontrol.scanner.volume import Timeline
from tests.support.gui import _scan, _window
from tests.support.wait import wait_until

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def _free_qt_objects_on_the_gui_thread(qapp: Any) -> Any:
    import gc

    yield
    gc.collect()
    QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete.value)
    gc.collect()


def bands(panel: TimecoursePanel) -> list[tuple[tuple[float, float], int]]:
    """The shading of the signal and feedback plots, checked to agree and to be in their plots."""
    assert all(b in plot.items and b.isVisible() for b, plot in zip(panel.bands, (panel.signal, panel.feedback)))
    assert panel.bands[0].regions() == panel.bands[1].regions()
    return panel.shading


def test_whole_design_shaded_before_the_first_volume(qtbot: Any, qloop: Any, tmp_path: Path) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    scan = write_run(SynthSpec(volumes=2, tr=0.5), tmp_path / "scan")  # the default ROI's phantom
    s = S.default_settings().with_values("run", tr=0.5, watch_folder=str(watch), expected_volumes=0)
    s = s.with_values("project", name="roi_feedback",
                      settings={"block_volumes": 8, "expected_volumes": 36, "skip_volumes": 1})
    window, session = _window(tmp_path, s)
    qtbot.addWidget(window)
    window.resize(1000, 700)
    window.show()
    c, panel = session.controller, window.timecourses

    async def scenario() -> None:
        try:
            await checks()
        finally:
            await session.close()

    async def checks() -> None:
        await open_session(window, session, start=False)
        await session.start_run()
        window.refresh()
        assert c.model.volumes == 0
        d = c.model.design
        assert d is not None and d.volumes == 37
        want = [((b.onset - 0.5, b.onset + b.volumes - 0.5), d.conditions.index(b.condition)) for b in d.blocks]
        assert want[:3] == [((0.5, 8.5), 0), ((8.5, 16.5), 1), ((16.5, 24.5), 0)] and len(want) == 5
        assert bands(panel) == want
        assert panel.legend == ("baseline", "feedback")
        title = panel.feedback.titleLabel.text
        assert "baseline" in title and "feedback" in title
        lo, hi = panel.signal.viewRange()[0]
        assert lo <= -0.5 and hi >= 36.5  # the whole protocol in view from the start
        # the first volume: the blocks stay as they are (the metric agrees with the design)
        _scan(scan, watch, 0)
        _scan(scan, watch, 1)
        await wait_until(lambda: c.model.feedbacks >= 2, what="feedback for the first volumes")
        window.refresh()
        assert bands(panel) == want
        assert c.model.metric("condition")[1] == 0.0
        await session.stop_run()

    qloop.run(scenario())
    window.close()


def test_shading_from_a_design_and_back_to_the_metric(qtbot: Any) -> None:
    """A design drawn at once, brushes by condition; the next run without one: shading from the metric again."""
    model = RunModel()
    panel = TimecoursePanel(model)
    qtbot.addWidget(panel)
    model.reset("a")
    model.design = Design(("rest", "left", "right"), (Block("rest", 0, 5), Block("left", 5, 5),
                                                       Block("rest", 10, 5), Block("right", 15, 5)))
    panel.on_event(ev.DesignKnown("a", model.design.conditions, 20))
    assert panel.dirty
    panel.refresh()
    assert bands(panel) == [((-0.5, 4.5), 0), ((4.5, 9.5), 1), ((9.5, 14.5), 0), ((14.5, 19.5), 2)]
    # painted: each block's colour in the middle of its band, the baseline's faint, the others stronger
    panel.resize(800, 500)
    panel.show()
    qtbot.waitExposed(panel)
    panel.signal.setYRange(0, 1, padding=0)
    QtWidgets.QApplication.processEvents()
    image = panel.graphics.grab().toImage()
    seen = {}
    for (left, right), code in panel.shading:
        where = panel.graphics.mapFromScene(panel.signal.vb.mapViewToScene(QtCore.QPointF((left + right) / 2, 0.9)))
        seen.setdefault(code, set()).add(image.pixelColor(where).getRgb()[:3])
    assert all(len(colours) == 1 for colours in seen.values()), seen  # one colour per condition
    rest, left, right = (next(iter(seen[code])) for code in (0, 1, 2))
    assert left[1] > rest[1] + 15 and right[0] > rest[0] + 15, seen  # green (#5fd3a0), orange (#f0b54a)
    assert panel.legend == ("rest", "left", "right")
    panel.on_event(ev.StateChanged(ev.RUNNING, "b"))
    model.reset("b")
    for i, code in enumerate([1, 1, np.nan, 0]):
        model.add_feedback(i, 0.5, {"condition": code}, Timeline())
    panel.repaint_now()
    assert bands(panel) == [((-0.5, 1.5), 1), ((2.5, 3.5), 0)]
    assert panel.legend == ()
