"""The window at 1366x768 and maximised to 1920x1080, as an operator sees it with the theme on: plots tall
enough to read with y numbers that never overlap, the connections table whole, the AFNI panel's fields
unclipped, the live views larger than the side panels, the side panels at their size."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from rtcontrol.console import events as ev
from rtcontrol.gui import theme
from rtcontrol.link.delivery import LinkState
from rtcontrol.paths import projects_dir
from rtcontrol.scanner.volume import Timeline
from rtcontrol.subject.display import FeedbackView
from rtcontrol.worker.projects import describe_folder
from tests.support.gui import _window

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]

#: The smallest data area (px) a timecourse plot may have: about five lines of text.
MIN_PLOT = 50
#: y ranges like those of a demo run (signal %, motion, FD, feedback, latency ms).
Y_RANGES = {"signal": (-1.2, 3.4), "motion": (-0.25, 0.45), "fd": (0.0, 0.75), "feedback": (-0.2, 1.2),
            "latency": (0.0, 220.0)}


@pytest.fixture
def themed(qapp: Any) -> Any:
    old = qapp.styleSheet()
    theme.apply(qapp)
    yield qapp
    qapp.setStyleSheet(old)


def _settle(window: QtWidgets.QMainWindow, ms: int = 250) -> None:
    deadline = QtCore.QDeadlineTimer(ms)
    while not deadline.hasExpired():
        QtWidgets.QApplication.processEvents()
        QtCore.QThread.msleep(10)


def _fingerprint(name: str) -> str:
    digest = hashlib.sha256(name.encode()).digest()
    return "SHA256:" + ":".join(f"{b:02X}" for b in digest)


def _fill(window: Any) -> None:
    """What a demo run shows: links up with addresses and fingerprints, y ranges of real data."""
    for n, name in enumerate(("worker", "subject")):
        window.connections.on_event(ev.ConnectionChanged(name, LinkState.CONNECTED, f"wss://127.0.0.1:4123{n}",
                                                         fingerprint=_fingerprint(name), rtt_ms=1.7))
    window.connections.on_event(ev.ConnectionChanged("afni", LinkState.OFF))
    window.connections.refresh()
    for key, plot in window.timecourses.plots.items():
        plot.setYRange(*Y_RANGES[key], padding=0)
    if window.controller.state != ev.RUNNING:  # a run starts: "waiting for the first volume" for a while
        window.on_event(ev.StateChanged(ev.RUNNING, window.controller.settings.run_id))
        window.refresh()
        _settle(window, 150)
    folder = "/tmp/rtcontrol-m1i67de4/watch-001"  # as long as the demo's: it wraps in the scanner panel
    window.scanner.set_run(0.5, 120, folder)
    window.scanner.on_event(ev.ScannerStatus(folder, 44, 44, "siemens_mosaic", "series-007", since_last=0.4))
    window.scanner.on_event(ev.Lateness("scanner", 0.9, None, "scanner late: no new volume for 0.9 s (TR is 0.5 s)"))
    model = window.controller.model
    for i, fd in enumerate([0.0, 0.2, 0.6, 0.1]):
        model.add_feedback(i, 0.5, {"fd": fd}, Timeline())
    window.scanner.on_event(ev.FeedbackArrived("r", 3, 0.5, {"fd": 0.1}, Timeline()))
    window.refresh()
    if not window.setup.project_form.fields:  # the demo project's own settings, as its worker declares them
        declared = describe_folder(projects_dir() / "roi_feedback")["settings"]
        window.setup.set_project_settings(window.setup.project.currentText(), declared)


def _tick_labels(axis: Any) -> list[tuple[QtCore.QRectF, str]]:
    image = QtGui.QImage(10, 10, QtGui.QImage.Format.Format_ARGB32)
    painter = QtGui.QPainter(image)
    try:
        specs = axis.generateDrawSpecs(painter)
    finally:
        painter.end()
    return [] if specs is None else [(rect, text) for rect, _flags, text in specs[2]]


def _wheel(widget: QtWidgets.QWidget, steps: int = 3) -> None:
    pos = QtCore.QPointF(widget.width() / 2, widget.height() / 2)
    event = QtGui.QWheelEvent(pos, widget.mapToGlobal(pos), QtCore.QPoint(), QtCore.QPoint(0, 120 * steps),
                              QtCore.Qt.MouseButton.NoButton, QtCore.Qt.KeyboardModifier.NoModifier,
                              QtCore.Qt.ScrollPhase.NoScrollPhase, False)
    QtWidgets.QApplication.sendEvent(widget, event)


def _in(widget: QtWidgets.QWidget, container: QtWidgets.QWidget) -> bool:
    """``widget`` lies wholly inside ``container`` (not clipped by it)."""
    top_left = widget.mapTo(container, QtCore.QPoint(0, 0))
    return container.rect().contains(QtCore.QRect(top_left, widget.size()))


def _check(window: Any, width: int, height: int) -> dict[str, Any]:
    problems: list[str] = []
    assert (window.width(), window.height()) == (width, height), "the window would not shrink to the screen"
    d = window.docks
    # the plots: tall enough, y numbers apart
    for key, plot in window.timecourses.plots.items():
        h = plot.vb.sceneBoundingRect().height()
        if h < MIN_PLOT:
            problems.append(f"plot {key} is {h:.0f} px high (< {MIN_PLOT})")
        if plot.sceneBoundingRect().right() > window.timecourses.graphics.width() + 1:
            problems.append(f"plot {key} is cut on the right")
        labels = _tick_labels(plot.getAxis("left"))
        if len(labels) < 2:
            problems.append(f"plot {key}: {len(labels)} y numbers")
        for (a, ta), (b, tb) in zip(labels, labels[1:]):
            if a.intersects(b):
                problems.append(f"plot {key}: y numbers {ta!r} and {tb!r} overlap")
    rights = [p.sceneBoundingRect().right() for p in window.timecourses.plots.values()]
    if max(rights) < 0.95 * window.timecourses.graphics.width():
        problems.append(f"the plots leave the right of their panel empty ({max(rights):.0f} of "
                        f"{window.timecourses.graphics.width()} px)")
    # the connections table: every row and column inside the view, no column squeezed below its header
    table = window.connections.table
    viewport = table.viewport()
    header = table.horizontalHeader()
    metrics = header.fontMetrics()
    for col in range(table.columnCount()):
        right = header.sectionViewportPosition(col) + header.sectionSize(col)
        title = table.horizontalHeaderItem(col).text()
        if right > viewport.width() or header.sectionSize(col) < metrics.horizontalAdvance(title) + 8:
            problems.append(f"connections column {title!r} is cut ({header.sectionSize(col)} px, "
                            f"ends at {right} of {viewport.width()})")
    for row in range(table.rowCount()):
        if table.rowViewportPosition(row) + table.rowHeight(row) > viewport.height():
            problems.append(f"connections row {row} is cut")
    # the AFNI panel (raised): its fields whole, no scroll bar over them
    d["AFNI"].raise_()
    _settle(window, 150)
    afni = window.afni
    dock_afni = d["AFNI"]
    for bar in dock_afni.findChildren(QtWidgets.QScrollBar):
        if bar.isVisible() and not isinstance(bar.parent().parent(), QtWidgets.QPlainTextEdit):
            problems.append("a scroll bar over the AFNI panel")
    for name in ("enable_box", "state_label", "sent_label", "not_sent_label", "runs_label", "settings_button"):
        w = getattr(afni, name, None)
        if w is None or not w.isVisible() or not _in(w, dock_afni):
            problems.append(f"AFNI {name} is hidden or clipped")
    d["Run setup"].raise_()
    _settle(window, 100)
    # the setup form scrolls up and down, never sideways: it is never wider than its column
    scroll = window.setup.scroll_area
    if scroll.widget().width() > scroll.viewport().width():
        problems.append(f"the setup form is cut on the right ({scroll.widget().width()} > {scroll.viewport().width()})")
    # every panel that does not scroll has the room it asks for
    for title in ("Scanner", "Connections", "Subject display"):
        panel = d[title].widget()
        if panel.height() < panel.minimumSizeHint().height():
            problems.append(f"{title} is clipped ({panel.height()} < {panel.minimumSizeHint().height()} px)")
    views = {name: v.sceneBoundingRect() for name, v in window.slices.views.items()}
    return {"problems": problems, "setup": d["Run setup"].width(), "scanner": d["Scanner"].width(),
            "bottom": d["Connections"].height(), "views": views}


def test_small_and_large_screens(qtbot: Any, themed: Any, tmp_path: Path) -> None:
    window, _session = _window(tmp_path)
    qtbot.addWidget(window)
    window.add_subject_view(FeedbackView())
    window.setWindowState(QtCore.Qt.WindowState.WindowNoState)  # maximised on the small offscreen screen
    window.resize(1366, 768)
    window.show()
    qtbot.waitExposed(window)
    _settle(window, 400)  # the first-show proportions
    _fill(window)
    _settle(window)
    small = _check(window, 1366, 768)
    window.grab().save(str(tmp_path / "layout-1366.png"))
    assert not small["problems"], "\n".join(small["problems"])
    assert all(r.height() >= 150 for r in small["views"].values()), small["views"]
    assert small["setup"] <= 0.24 * 1366, small

    window.resize(1920, 1080)  # maximised
    _settle(window)
    _fill(window)
    _settle(window)
    large = _check(window, 1920, 1080)
    window.grab().save(str(tmp_path / "layout-1920.png"))
    assert not large["problems"], "\n".join(large["problems"])
    assert large["setup"] <= 0.2 * 1920 and abs(large["setup"] - small["setup"]) <= 8, (small, large)
    # the live views get the room: each slice larger than the setup column is wide, and larger than at 1366
    for name, r in large["views"].items():
        assert min(r.width(), r.height()) >= large["setup"], (name, r, large["setup"])
        assert r.height() >= small["views"][name].height() + 100, (name, small["views"][name], r)
    window.close()


def test_the_first_window_fits_the_screen(qtbot: Any, tmp_path: Path) -> None:
    window, _session = _window(tmp_path)
    qtbot.addWidget(window)
    screen = window.screen().availableGeometry()
    assert window.width() <= screen.width() and window.height() <= screen.height(), (window.size(), screen)
    window.close()


def test_afni_settings_open_in_their_own_window_whole(qtbot: Any, themed: Any, tmp_path: Path) -> None:
    window, _session = _window(tmp_path)
    qtbot.addWidget(window)
    afni = window.afni
    dialog = afni.show_settings()
    qtbot.waitExposed(dialog)
    for field in (afni.host_edit, afni.control_spin, afni.data_spin, afni.channel_combo, afni.shm_edit,
                  afni.note_edit, afni.keep_box, afni.motion_box, afni.motion_spin):
        assert field.isVisible() and _in(field, dialog), field
    assert not any(bar.isVisible() for bar in dialog.findChildren(QtWidgets.QScrollBar))
    assert afni.settings_box.isEnabled() and "switched on" in afni.settings_note.text()
    # a wheel over a port the operator has not clicked leaves it alone
    port = afni.control_spin.value()
    _wheel(afni.control_spin)
    assert afni.control_spin.value() == port
    dialog.close()
    window.close()


def test_maximised_with_the_afni_tab_raised_the_column_keeps_its_width(qtbot: Any, themed: Any,
                                                                        tmp_path: Path) -> None:
    window, _session = _window(tmp_path)
    qtbot.addWidget(window)
    window.setWindowState(QtCore.Qt.WindowState.WindowNoState)
    window.resize(1366, 768)
    window.show()
    qtbot.waitExposed(window)
    _settle(window, 400)
    window.docks["AFNI"].raise_()
    _settle(window)
    before = window.docks["AFNI"].width()
    window.resize(1920, 1080)
    _settle(window)
    assert abs(window.docks["AFNI"].width() - before) <= 8, (before, window.docks["AFNI"].width())
    window.docks["Run setup"].raise_()
    _settle(window)
    assert abs(window.docks["Run setup"].width() - before) <= 8
    window.close()


def test_first_shown_on_a_large_screen(qtbot: Any, themed: Any, tmp_path: Path) -> None:
    """Opened at 1920x1080 straight away (no smaller size first): the same checks."""
    window, _session = _window(tmp_path)
    qtbot.addWidget(window)
    window.add_subject_view(FeedbackView())
    window.setWindowState(QtCore.Qt.WindowState.WindowNoState)
    window.resize(1920, 1080)
    window.show()
    qtbot.waitExposed(window)
    _settle(window, 400)
    _fill(window)
    _settle(window)
    large = _check(window, 1920, 1080)
    assert not large["problems"], "\n".join(large["problems"])
    assert large["setup"] <= 0.2 * 1920
    assert all(min(r.width(), r.height()) >= large["setup"] for r in large["views"].values()), large
    window.close()


def test_plots_go_into_columns_when_short_and_back(qtbot: Any) -> None:
    from rtcontrol.console.model import RunModel
    from rtcontrol.gui.timecourse_panel import COLUMNS, TimecoursePanel
    from rtcontrol.scanner.volume import Timeline

    model = RunModel()
    panel = TimecoursePanel(model)
    qtbot.addWidget(panel)
    for i in range(30):
        model.add_feedback(i, i / 30, {"fd": 0.1 * (i % 7)}, Timeline())
    panel.show()
    for size, columns in (((1000, 900), 1), ((1000, 220), 3), ((700, 220), 2), ((1000, 900), 1), ((1600, 330), 3)):
        panel.resize(*size)
        qtbot.waitUntil(lambda columns=columns: panel.columns == columns, timeout=2000)
        panel.repaint_now()
        QtWidgets.QApplication.processEvents()
        order = [list(panel.plots)] if columns == 1 else COLUMNS[columns]
        lefts = []
        for names in order:
            xs = {round(panel.plots[n].sceneBoundingRect().left()) for n in names}
            assert len(xs) == 1, (size, names, xs)  # one column: the same left edge
            lefts.append(xs.pop())
            tops = [panel.plots[n].sceneBoundingRect().top() for n in names]
            assert tops == sorted(tops), (size, names, tops)
        assert lefts == sorted(lefts) and len(set(lefts)) == len(order), (size, lefts)
        assert all(p.isVisible() and p.scene() is panel.graphics.scene() for p in panel.plots.values())
        _x, y = panel.curves["feedback"].getData()
        assert y is not None and len(y) == 30  # the curves stay in their plots
        assert panel.feedback.getViewBox().linkedView(0) is panel.signal.getViewBox()
