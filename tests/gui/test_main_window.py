"""A whole run driven through the window: set up, start (Ctrl+R), volumes arrive, feedback reaches the
subject display, stop (Esc). Real embedded worker and subject agent over TLS, the real watcher."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6 import QtCore

from rtcontrol.console import events as ev
from rtcontrol.console import settings as S
from rtcontrol.console.session import ConsoleSession
from rtcontrol.gui.app import open_session
from rtcontrol.gui.main_window import MainWindow
from tests.support.gui import VOLUMES, _scan, _window
from tests.support.wait import wait_until

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]


def test_whole_run_through_the_window(qtbot: Any, qloop: Any, tmp_path: Path, synth_series: Path) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    window, session = _window(tmp_path, subject_display=True)
    qtbot.addWidget(window)
    window.resize(800, 600)  # the offscreen screen's size: every dock is exposed and paints
    with qtbot.waitActive(window):
        window.show()
        window.activateWindow()
    c = session.controller

    async def scenario() -> None:
        await open_session(window, session, start=False)
        await wait_until(lambda: window.setup.project_form.fields, what="the project's settings form")
        assert set(window.setup.project_form.fields) >= {"baseline", "scale"}
        assert window.subject_view is not None
        await wait_until(window.isActiveWindow, what="the window to be active again after docking the subject display")
        # set the run up through the form
        window.setup.tr_field.setValue(0.5)
        window.setup.expected.setValue(0)
        window.setup.watch.setText(str(watch))
        window.setup.project_form.fields["baseline"][1].setValue(2)
        qtbot.keyClick(window, QtCore.Qt.Key.Key_R, QtCore.Qt.KeyboardModifier.ControlModifier)
        await wait_until(lambda: c.state == ev.RUNNING, what=f"the run to start ({window.setup.message.text()})")
        assert not window.setup.start_button.isEnabled() and window.setup.stop_button.isEnabled()
        assert c.settings.project.settings["baseline"] == 2
        window.refresh()
        assert window.banner.text() == "WAITING FOR THE FIRST VOLUME"
        for i in range(VOLUMES):
            _scan(synth_series, watch, i)
            log = [str(m) for m in window.log.pending] + window.log.lines
            await wait_until(lambda i=i: c.model.volumes > i, what=f"volume {i}; log: {log}")
        await wait_until(lambda: c.model.delivered == VOLUMES - 2, what="feedback at the subject agent")
        v = window.subject_view
        await wait_until(lambda: v.painted is not None,
                         what=f"the subject display to paint {v.isVisible()} {v.value} {v.pending} {v.size()}")
        window.refresh()
        # the panels show the run
        assert window.banner.text() == f"RUNNING · volume {VOLUMES}" and window.banner.objectName() == "banner-running"
        assert window.scanner.volumes.text().startswith(str(VOLUMES))
        img = window.slices.images["axial"].image
        assert img is not None and img.shape == (32, 32)
        # the synthetic grid is L, P, S: shown in the standard orientation (R, A, S axes), flipped in x and y
        assert np.allclose(img, c.model.latest_scaled[::-1, ::-1, 6])
        fb = window.timecourses.curves["feedback"].getData()[1]
        assert np.isnan(fb[:2]).all() and np.isfinite(fb[2:]).all()
        lat = window.timecourses.curves["lat:subject_delivered"].getData()[1]
        assert np.isfinite(lat[2:]).all() and (lat[2:] > 0).all()
        assert window.subject_view.value == pytest.approx(c.model.feedback.get(VOLUMES - 1))
        text = window.slices.read_voxel("axial", 16.5, 10.5)
        assert "voxel (15, 21, 6)" in text
        # Esc asks first; Esc again (a stray key) keeps the run going
        qtbot.keyClick(window, QtCore.Qt.Key.Key_Escape)
        await wait_until(lambda: getattr(window, "stop_box", None) is not None and window.stop_box.isVisible(),
                    what="the stop confirmation")
        await asyncio.sleep(0.3)
        assert c.state == ev.RUNNING
        qtbot.keyClick(window.stop_box, QtCore.Qt.Key.Key_Escape)
        await wait_until(lambda: not window.stop_box.isVisible(), what="the confirmation to close")
        await asyncio.sleep(0.3)
        assert c.state == ev.RUNNING
        # Esc, then the deliberate answer, stops it
        window.activateWindow()
        await wait_until(window.isActiveWindow, what="the window active again")
        qtbot.keyClick(window, QtCore.Qt.Key.Key_Escape)
        await wait_until(lambda: window.stop_box.isVisible(), what="the stop confirmation again")
        stop = next(b for b in window.stop_box.buttons() if b.text() == "Stop the run")
        stop.click()
        await wait_until(lambda: c.state == ev.ENDED, what="the run to stop")
        window.refresh()
        assert window.setup.start_button.isEnabled()
        assert window.banner.text() == f"ENDED · {VOLUMES} volumes"
        assert "stopped by the operator" in window.state_label.text()
        rows = {window.connections.table.item(r, 0).text(): window.connections.table.item(r, 2).text()
                for r in range(window.connections.table.rowCount())}
        assert rows["worker"] == "connected" and rows["subject"] == "connected"
        assert any("ended" in line for line in window.log.lines)
        await session.close()

    qloop.run(scenario())
    window.close()
    assert QtCore.QSettings(str(tmp_path / "layout.ini"), QtCore.QSettings.Format.IniFormat).value("state") is not None


def test_bad_settings_are_shown_not_run(qtbot: Any, qloop: Any, tmp_path: Path) -> None:
    window, session = _window(tmp_path)
    qtbot.addWidget(window)
    window.setup.subject.setText("sub 01")
    assert window.start_run() is None
    assert "letters and digits" in window.setup.message.text()
    assert session.controller.state == ev.IDLE
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\ntr = 0\n")
    assert not window.load_settings_from(bad)
    assert "tr = 0.0" in window.setup.message.text()
    good = S.save(S.RunSettings().with_values("run", subject="42", run=3), tmp_path / "good.toml")
    assert window.load_settings_from(good)
    assert window.setup.settings().run_id.startswith("sub-42_") and window.setup.run_number.value() == 3
    window.next_run()
    assert window.setup.run_number.value() == 4
    window.close()


def test_trust_on_first_use_prompt_pins_the_worker(qtbot: Any, qloop: Any, tmp_path: Path) -> None:
    """A remote worker (given by address) presents an unknown certificate: the operator is asked, says
    yes, the fingerprint is pinned; a second session connects without asking."""
    from PySide6 import QtWidgets

    from rtcontrol.worker.embedded import local_worker

    async def scenario() -> None:
        async with local_worker(in_process=True) as info:
            s = S.default_settings().with_values("worker", url=info.url, token=info.token)
            known = tmp_path / "known_hosts"
            window, session = _window(tmp_path, s, known_hosts=known)
            qtbot.addWidget(window)
            session.on_unknown_host = window.trust_prompt
            window.show()
            opening = asyncio.ensure_future(session.open())
            await wait_until(lambda: getattr(window, "_trust_box", None) is not None and window._trust_box.isVisible(),
                        what="the trust prompt")
            box = window._trust_box
            assert info.fingerprint in box.informativeText()
            box.button(QtWidgets.QMessageBox.StandardButton.Yes).click()
            await opening
            assert session.controller.worker is not None
            rows = {window.connections.table.item(r, 0).text(): r for r in range(3)}
            window.refresh()
            assert window.connections.table.item(rows["worker"], 2).text() == "connected"
            assert info.fingerprint in known.read_text()
            await session.close()
            window.close()
            # pinned now: no question the second time
            window2, session2 = _window(tmp_path, s, known_hosts=known)
            qtbot.addWidget(window2)
            asked: list[str] = []
            session2.on_unknown_host = lambda peer, fp: asked.append(peer) or False
            await session2.open()
            assert session2.controller.worker is not None and not asked
            await session2.close()
            window2.close()

    qloop.run(scenario())


def test_project_form_is_drawn_from_declared_settings(qtbot: Any, tmp_path: Path) -> None:
    """Every Setting type gets a field; values read back typed; a bad vector is refused with its name."""
    from rtcontrol.gui.setup_panel import SetupPanel
    from rtcontrol.project import Setting

    declared = [
        Setting("threshold", 0.5, "float", minimum=0.0, maximum=1.0).to_dict(),
        Setting("baseline", 5, "int", minimum=1).to_dict(),
        Setting("smooth", True, "bool").to_dict(),
        Setting("drift", "legendre", "choice", choices=("legendre", "dct")).to_dict(),
        Setting("roi_lo", [15.0, -58.0, 4.0], "vector3").to_dict(),
        Setting("mask", "", "path").to_dict(),
    ]
    s = S.default_settings().with_values("project", name="demo_project", settings={"baseline": 7})
    panel = SetupPanel(s)
    qtbot.addWidget(panel)
    panel.set_project_settings("demo_project", declared)
    values = panel.settings().project.settings
    assert values == {"threshold": 0.5, "baseline": 7, "smooth": True, "drift": "legendre",
                      "roi_lo": [15.0, -58.0, 4.0], "mask": ""}
    panel.project_form.fields["roi_lo"][1].setText("1, 2")
    assert panel.checked_settings() is None
    assert "roi_lo" in panel.message.text() and "three numbers" in panel.message.text()


def test_a_run_that_cannot_be_recorded_is_refused_with_a_message_box(qtbot: Any, qloop: Any, tmp_path: Path) -> None:
    import os

    from PySide6 import QtWidgets

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    runs = locked / "runs"
    if os.access(locked, os.W_OK):  # root ignores permissions: a read-only file system instead
        if not Path("/sys/kernel").is_dir():
            pytest.skip("running as root and no read-only file system (/sys) to test with")
        runs = Path("/sys/kernel/rtcontrol-runs")
    watch = tmp_path / "watch"
    watch.mkdir()
    session = ConsoleSession(S.default_settings(), runs_dir=runs)
    store = QtCore.QSettings(str(tmp_path / "layout.ini"), QtCore.QSettings.Format.IniFormat)
    window = MainWindow(session, settings_store=store)
    qtbot.addWidget(window)
    window.setup.watch.setText(str(watch))
    task = window.start_run()
    assert task is not None
    qloop.run(asyncio.wait([task]))
    qtbot.waitUntil(lambda: window.findChild(QtWidgets.QMessageBox, "run-refused") is not None, timeout=5000)
    box = window.findChild(QtWidgets.QMessageBox, "run-refused")
    assert "could not be recorded" in box.text() and "cannot write to" in box.text()
    assert "cannot write to" in window.setup.message.text()
    assert session.controller.state == ev.IDLE and not session.controller.running
    box.close()
    window.close()


def test_an_interrupted_run_is_offered_and_finished(qtbot: Any, qloop: Any, tmp_path: Path) -> None:
    """A console killed mid-run left a run folder; the next start lists it, Finish writes its BIDS files."""
    from tests.support.console import killed_run

    killed = killed_run(tmp_path / "runs")
    window, session = _window(tmp_path, S.default_settings().with_values("project", name="template"))
    qtbot.addWidget(window)
    c = session.controller
    logged: list[ev.LogMessage] = []
    c.events.subscribe(lambda e: logged.append(e) if isinstance(e, ev.LogMessage) else None)

    async def scenario() -> None:
        await open_session(window, session, start=False)
        dialog = window.interrupted_dialog
        assert dialog.isVisible() and dialog.list.count() == 1
        assert dialog.list.item(0).text().startswith("sub-killed ses-01 task-feedback run-1: 3 volumes recorded")
        assert dialog.list.item(0).toolTip() == str(killed)
        dialog.finish_button.click()
        await wait_until(lambda: any("interrupted run finished" in m.text for m in logged), what="the run finished")

    try:
        qloop.run(scenario())
    finally:
        qloop.run(session.close())
    bold = tmp_path / "runs/bids/sub-killed/ses-01/func/sub-killed_ses-01_task-feedback_run-01_bold.nii.gz"
    assert bold.is_file()
    done = [m.text for m in logged if "interrupted run finished" in m.text]
    assert done == [f"interrupted run finished: its BIDS files are in {bold.parent} ({bold.name})"]
    assert not [m.text for m in logged if m.level == "error"]
    assert c.interrupted_runs() == []  # nothing left to offer
    window.close()


def test_allowed_folders_are_set_in_run_setup_saved_loaded_and_used(qtbot: Any, qloop: Any, tmp_path: Path) -> None:
    """[files] allowed_folders: Add / Remove in Run setup, saved and loaded with the settings, and the
    worker link answers the project's file requests from the run's list."""
    shared, other = tmp_path / "stimuli", tmp_path / "other"
    shared.mkdir()
    other.mkdir()
    watch = tmp_path / "watch"
    watch.mkdir()
    window, session = _window(tmp_path, S.default_settings().with_values("project", name="template"))
    qtbot.addWidget(window)
    panel = window.setup
    assert panel.allowed_folders() == ()
    panel.add_allowed_folder(str(shared))
    panel.add_allowed_folder(str(other))
    panel.add_allowed_folder(str(shared))  # already there
    panel.allowed.setCurrentRow(1)
    panel.remove_folder.click()
    assert panel.allowed_folders() == (str(shared),)
    assert panel.settings().files.allowed_folders == (str(shared),)
    # saved and loaded with the settings
    path = S.save(panel.settings(), tmp_path / "mine.toml")
    assert S.load(path).files.allowed_folders == (str(shared),)
    panel.set_settings(S.default_settings())
    assert panel.allowed_folders() == ()
    assert window.load_settings_from(path) and panel.allowed_folders() == (str(shared),)
    panel.watch.setText(str(watch))
    c = session.controller

    async def scenario() -> None:
        await open_session(window, session, start=False)
        try:
            assert c.worker is not None
            await window.start_run()
            assert c.running and c.settings.files.allowed_folders == (str(shared),)
            assert c.worker.client.files.allowed == [shared.resolve()]  # what the project may reach now
            assert not panel.allowed.isEnabled() and not panel.add_folder.isEnabled()  # fixed during a run
            await c.stop_run()
        finally:
            await session.close()

    qloop.run(scenario())
    window.close()
