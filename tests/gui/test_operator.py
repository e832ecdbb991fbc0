"""The console as an operator's instrument: no accidental edits, locked fields that look locked, a layout
reset that takes effect at once, the FD threshold and the latest feedback value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from rtcontrol.console import events as ev
from rtcontrol.console import settings as S
from rtcontrol.console.model import RunModel
from rtcontrol.console.session import ConsoleSession
from rtcontrol.gui import theme
from rtcontrol.gui.main_window import MainWindow, feedback_text
from rtcontrol.gui.setup_panel import SetupPanel
from rtcontrol.gui.timecourse_panel import TimecoursePanel
from rtcontrol.scanner.volume import Timeline

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]


def _wheel(widget: QtWidgets.QWidget, steps: int = -3) -> None:
    pos = QtCore.QPointF(widget.width() / 2, widget.height() / 2)
    event = QtGui.QWheelEvent(pos, widget.mapToGlobal(pos), QtCore.QPoint(), QtCore.QPoint(0, 120 * steps),
                              QtCore.Qt.MouseButton.NoButton, QtCore.Qt.KeyboardModifier.NoModifier,
                              QtCore.Qt.ScrollPhase.NoScrollPhase, False)
    QtWidgets.QApplication.sendEvent(widget, event)


def test_wheel_over_an_unfocused_spin_box_scrolls_the_form_not_the_value(qtbot: Any) -> None:
    panel = SetupPanel(S.default_settings())
    qtbot.addWidget(panel)
    panel.resize(340, 300)  # short: the form scrolls
    panel.show()
    qtbot.waitExposed(panel)
    panel.set_project_settings(panel.project.currentText(),
                               [{"name": "level", "default": 5, "type": "int", "minimum": 0, "maximum": 100}])
    form_field = panel.project_form.fields["level"][1]
    bar = panel.scroll_area.verticalScrollBar()
    assert bar.maximum() > 0, "the form should be taller than the panel for this test"
    for spin, start in ((panel.run_number, 3), (panel.tr_field, 2.0), (form_field, 5)):
        spin.setValue(start)
        panel.setFocus()
        bar.setValue(0)
        _wheel(spin)
        assert spin.value() == start, f"{spin}: an unfocused field took the wheel"
        assert bar.value() > 0, "the wheel should scroll the form instead"
    # a focused field (the operator clicked it) still takes the wheel
    panel.run_number.setFocus()
    qtbot.waitUntil(panel.run_number.hasFocus)
    _wheel(panel.run_number, steps=1)
    assert panel.run_number.value() == 4


def test_locked_fields_look_read_only(qtbot: Any, qapp: Any) -> None:
    old = qapp.styleSheet()
    theme.apply(qapp)
    try:
        panel = SetupPanel(S.default_settings())
        qtbot.addWidget(panel)
        panel.resize(340, 700)
        panel.show()
        qtbot.waitExposed(panel)
        field = panel.subject

        def background() -> int:
            QtWidgets.QApplication.processEvents()
            img = field.grab().toImage()
            return img.pixel(img.width() - 6, img.height() // 2)  # right of the text, inside the box

        editable = background()
        panel.on_event(ev.StateChanged(ev.RUNNING, "run"))
        assert not field.isEnabled() and panel.locked_note.isVisible()
        assert background() != editable, "a locked field is drawn like an editable one"
        panel.on_event(ev.StateChanged(ev.ENDED, "run"))
        assert field.isEnabled() and not panel.locked_note.isVisible()
        assert background() == editable
    finally:
        qapp.setStyleSheet(old)


def _window(tmp_path: Path) -> MainWindow:
    session = ConsoleSession(S.default_settings(), runs_dir=tmp_path / "runs", worker_options={"in_process": True})
    store = QtCore.QSettings(str(tmp_path / "layout.ini"), QtCore.QSettings.Format.IniFormat)
    return MainWindow(session, settings_store=store)


def test_reset_layout_takes_effect_at_once_and_survives_closing(qtbot: Any, tmp_path: Path) -> None:
    Area = QtCore.Qt.DockWidgetArea
    window = _window(tmp_path)
    qtbot.addWidget(window)
    window.resize(1366, 768)
    window.show()
    qtbot.waitExposed(window)
    d = window.docks
    # trap the layout: timecourses into the bottom strip, the live views floating, the log closed
    window.addDockWidget(Area.BottomDockWidgetArea, d["Timecourses"])
    d["Live views"].setFloating(True)
    d["Log"].hide()
    window.reset_action.trigger()
    qtbot.wait(300)
    assert window.dockWidgetArea(d["Timecourses"]) == Area.RightDockWidgetArea
    assert not d["Live views"].isFloating() and d["Log"].isVisible()
    assert d["Timecourses"].height() > 200, d["Timecourses"].height()
    window.close()
    # closing saved the reset layout, not the trapped one
    again = _window(tmp_path)
    qtbot.addWidget(again)
    assert again.dockWidgetArea(again.docks["Timecourses"]) == Area.RightDockWidgetArea
    assert not again.docks["Live views"].isFloating()
    again.close()


def test_layout_is_kept_where_the_readme_says(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rtcontrol.gui.main_window import layout_store

    monkeypatch.setenv("RTCONTROL_HOME", str(tmp_path / "home"))
    store = layout_store()
    assert Path(store.fileName()) == tmp_path / "home" / "console-layout.ini"
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    assert "console-layout.ini" in readme


def test_fd_threshold_line_and_count(qtbot: Any) -> None:
    model = RunModel()
    panel = TimecoursePanel(model)
    qtbot.addWidget(panel)
    for i, fd in enumerate([0.1, 0.7, 0.2, 0.9, 0.3]):
        model.add_feedback(i, 0.5, {"fd": fd}, Timeline())
    panel.set_fd_threshold(0.5)
    panel.repaint_now()
    assert panel.fd_summary() == (0.3, 2)
    assert panel.fd_line.value() == 0.5
    assert "2 over 0.5 mm" in panel.fd_text and "latest 0.30 mm" in panel.fd_text
    x, y = panel.curves["fd"].getData()
    assert np.allclose(y, [0.1, 0.7, 0.2, 0.9, 0.3])
    lo, hi = panel.fd.viewRange()[1]
    assert lo <= 0.5 <= hi, "the threshold line must be in view"
    panel.set_fd_threshold(0.8)
    panel.repaint_now()
    assert panel.fd_summary() == (0.3, 1) and "1 over 0.8 mm" in panel.fd_text


def test_display_settings_checked_and_applied(qtbot: Any, tmp_path: Path) -> None:
    with pytest.raises(S.SettingsError, match=r"\[display\] left_right"):
        S.RunSettings().with_values("display", left_right="sideways")
    with pytest.raises(S.SettingsError, match=r"\[display\] fd_threshold"):
        S.RunSettings().with_values("display", fd_threshold=0.0)
    saved = S.save(S.RunSettings().with_values("display", left_right="neurological", fd_threshold=0.3),
                   tmp_path / "n.toml")
    window = _window(tmp_path)
    qtbot.addWidget(window)
    assert window.slices.convention == "radiological"
    assert window.load_settings_from(saved)
    assert window.slices.convention == "neurological" and window.timecourses.fd_threshold == 0.3
    assert window.slices.edge_text("axial")["left"] == "L"
    window.convention_actions["radiological"].trigger()
    assert window.slices.edge_text("axial")["left"] == "R"
    assert window.setup.settings().display.left_right == "radiological"
    window.close()


def test_feedback_text() -> None:
    assert feedback_text(None) == "—"
    assert feedback_text(0.3456) == "0.35"
    assert feedback_text({"value": 1}) == "1.00"


def test_latest_feedback_value_beside_the_subject_display(qtbot: Any, tmp_path: Path) -> None:
    from rtcontrol.subject.display import FeedbackView

    window = _window(tmp_path)
    qtbot.addWidget(window)
    window.add_subject_view(FeedbackView())
    window.refresh()
    assert window.feedback_value.text() == "—"
    holder = window.docks["Subject display"].widget()
    assert window.feedback_value.parent() is holder and window.subject_view.parent() is holder
    window.controller.model.add_feedback(0, 0.4567, {}, Timeline())
    window.refresh()
    assert window.feedback_value.text() == "0.46"
    window.close()


def test_condition_shading_follows_the_projects_condition_metric(qtbot: Any) -> None:
    model = RunModel()
    panel = TimecoursePanel(model)
    qtbot.addWidget(panel)
    codes = [0] * 4 + [1] * 3 + [0] * 2
    for i, c in enumerate(codes[:5]):
        model.add_feedback(i, 0.5, {"condition": c}, Timeline())
    panel.repaint_now()
    assert panel.shading == [((-0.5, 3.5), 0), ((3.5, 4.5), 1)]
    for i, c in enumerate(codes[5:], start=5):
        model.add_feedback(i, 0.5, {"condition": c}, Timeline())
    panel.repaint_now()
    assert panel.shading == [((-0.5, 3.5), 0), ((3.5, 6.5), 1), ((6.5, 8.5), 0)]
    plots = (panel.signal, panel.feedback)
    assert all(bands in plot.items and bands.regions() == panel.shading for bands, plot in zip(panel.bands, plots))
    panel.on_event(ev.StateChanged(ev.RUNNING, "next"))
    assert panel.shading == [] and all(bands.blocks == [] for bands in panel.bands)
    model.reset("next")
    model.add_feedback(0, 0.5, {"condition": 1}, Timeline())
    panel.repaint_now()
    assert panel.shading == [((-0.5, 0.5), 1)]


def test_scanner_panel_says_the_run_ended_instead_of_late(qtbot: Any) -> None:
    from rtcontrol.gui.scanner_panel import ScannerPanel

    panel = ScannerPanel()
    qtbot.addWidget(panel)
    panel.set_run(0.5, 0, "/watch")
    panel.on_event(ev.StateChanged(ev.RUNNING, "r"))
    panel.on_event(ev.ScannerStatus("/watch", 10, 10, "nifti", "s1", since_last=0.2))
    panel.on_event(ev.Lateness("scanner", 1.6, None, "scanner late: no new volume for 1.6 s"))
    panel.refresh()
    assert "scanner late" in panel.warning.text()
    panel.on_event(ev.RunEnded("r", "no volume for 10 TR", 10, 9))
    panel.on_event(ev.ScannerStatus("/watch", 10, 10, "nifti", "s1", since_last=3.0))  # the watcher's last tick
    panel.on_event(ev.Lateness("scanner", 3.0, None, "scanner late: no new volume for 3.0 s"))
    panel.refresh()
    assert panel.warning.text() == ""
    assert panel.since.text() == "run ended (no volume for 10 TR)"
    assert panel.volumes.text() == "10"
    panel.on_event(ev.StateChanged(ev.RUNNING, "r2"))
    panel.refresh()
    assert panel.since.text() == "waiting for the first volume"


def test_log_follows_new_lines_until_the_operator_scrolls_up(qtbot: Any) -> None:
    from rtcontrol.gui.log_panel import LogPanel

    panel = LogPanel()
    qtbot.addWidget(panel)
    panel.resize(300, 120)
    panel.show()
    qtbot.waitExposed(panel)
    bar = panel.text.verticalScrollBar()

    def say(n: int, start: int = 0) -> None:
        for i in range(start, start + n):
            panel.on_event(ev.LogMessage("info", f"line {i}: a long line that wraps in a narrow log panel", "test"))
        panel.refresh()
        QtWidgets.QApplication.processEvents()

    say(40)
    assert bar.maximum() > 0 and bar.value() == bar.maximum()
    panel.resize(200, 100)  # narrower: lines wrap again, the range grows
    QtWidgets.QApplication.processEvents()
    say(5, 40)
    assert bar.value() == bar.maximum(), "the log stopped following after a resize"
    bar.triggerAction(QtWidgets.QAbstractSlider.SliderAction.SliderPageStepSub)  # the operator reads back
    qtbot.wait(20)
    held = bar.value()
    say(5, 45)
    assert bar.value() == held < bar.maximum()
    bar.triggerAction(QtWidgets.QAbstractSlider.SliderAction.SliderToMaximum)
    qtbot.wait(20)
    say(5, 50)
    assert bar.value() == bar.maximum()


def _geometry(window: MainWindow) -> dict[str, Any]:
    for _ in range(10):
        QtWidgets.QApplication.processEvents()
        QtCore.QThread.msleep(10)
    window.refresh()
    return {
        "setup": window.docks["Run setup"].width(),
        "bottom": window.docks["Connections"].height(),
        "plots": [int(p.sceneBoundingRect().height()) for p in window.timecourses.plots.values()],
        "views": [int(v.sceneBoundingRect().height()) for v in window.slices.views.values()],
    }


def test_a_larger_screen_goes_to_the_views_and_plots(qtbot: Any, tmp_path: Path) -> None:
    """1366x768, then maximised to 1920x1080 and back: the setup column and the bottom strip keep their
    size, the live views and plots take the difference; the grabs are what an operator would see."""
    window = _window(tmp_path)
    qtbot.addWidget(window)
    window.show()
    window.resize(1366, 768)
    qtbot.waitExposed(window)
    qtbot.wait(300)  # the first-show proportions
    small = _geometry(window)
    window.grab().save(str(tmp_path / "console-1366x768.png"))
    window.resize(1920, 1080)
    qtbot.wait(100)
    large = _geometry(window)
    window.grab().save(str(tmp_path / "console-1920x1080.png"))
    assert abs(large["setup"] - small["setup"]) <= 8, (small, large)
    assert large["setup"] <= 0.25 * 1920
    assert abs(large["bottom"] - small["bottom"]) <= 8, (small, large)
    assert all(b >= a + 40 for a, b in zip(small["views"], large["views"])), (small, large)
    assert all(b >= a + 25 for a, b in zip(small["plots"], large["plots"])), (small, large)
    assert min(small["plots"]) >= 30 and min(small["views"]) >= 90, small
    window.resize(1366, 768)
    qtbot.wait(100)
    back = _geometry(window)
    assert abs(back["setup"] - small["setup"]) <= 8 and abs(back["bottom"] - small["bottom"]) <= 8, (small, back)
    window.close()


def test_file_menu_quit_screenshot_and_about(qtbot: Any, tmp_path: Path) -> None:
    window = _window(tmp_path)
    qtbot.addWidget(window)
    window.resize(900, 600)
    window.show()
    qtbot.waitExposed(window)
    menus = [a.text() for a in window.menuBar().actions()]
    assert menus[:1] == ["&File"] and "&Help" in menus
    shot = window.save_screenshot(tmp_path / "shots" / "console.png")
    img = QtGui.QImage(str(shot))
    assert img.width() == window.width() and img.height() == window.height()
    assert "rtcontrol 0." in window.about_text() and "README.md" in window.about_text()
    assert window.quit_action.shortcut().toString() == "Ctrl+Q"
    with qtbot.waitSignal(window.closed, timeout=2000):
        window.quit_action.trigger()
    assert not window.isVisible()


def test_the_form_shows_the_run_being_recorded(qtbot: Any, tmp_path: Path) -> None:
    """The session may give a simulated scan the next free run number: the form follows it."""
    window = _window(tmp_path)
    qtbot.addWidget(window)
    assert window.setup.run_number.value() == 1
    c = window.controller
    c.settings = c.settings.with_values("run", run=3)  # what the session started
    window.on_event(ev.StateChanged(ev.RUNNING, c.settings.run_id))
    assert window.setup.run_number.value() == 3
    window.close()
