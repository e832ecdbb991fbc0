"""The console's main window: dock panels over a :class:`ConsoleSession`, repainted on a timer.

Controller events only mark panels dirty; a 40 ms timer repaints what changed, so a burst of
volumes costs one repaint and the event loop is never held for long.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from PySide6 import QtCore, QtGui, QtWidgets

from rtcontrol.console import events as ev
from rtcontrol.console import settings as settings_io
from rtcontrol.console.session import ConsoleSession
from rtcontrol.gui.afni_panel import AfniPanel
from rtcontrol.gui.connections_panel import ConnectionsPanel, ask_trust
from rtcontrol.gui.log_panel import LogPanel
from rtcontrol.gui.panel import Panel, set_role
from rtcontrol.gui.scanner_panel import ScannerPanel
from rtcontrol.gui.setup_panel import SetupPanel
from rtcontrol.gui.slices_panel import SlicesPanel
from rtcontrol.gui.summary_view import SummaryView
from rtcontrol.gui.theme import icon
from rtcontrol.gui.timecourse_panel import TimecoursePanel
from rtcontrol.recording.recorder import RecordingError

log = logging.getLogger("rtcontrol.gui")

REPAINT_MS = 40
#: Side panels never take more than this share of the window when it is resized.
SIDE_SHARE = 0.3
LAYOUT_VERSION = 2  # 2: AFNI moved beside Run setup (a layout saved before puts it back in the strip)
#: The window's first size where the screen has room for it.
DEFAULT_SIZE = (1560, 960)


def layout_store() -> QtCore.QSettings:
    """The window layout, kept where the README says: ``$RTCONTROL_HOME/console-layout.ini`` (default
    ``~/.rtcontrol``), beside the pinned certificates and tokens."""
    from rtcontrol.paths import user_data_dir

    return QtCore.QSettings(str(user_data_dir() / "console-layout.ini"), QtCore.QSettings.Format.IniFormat)


def feedback_text(value: Any) -> str:
    """The latest feedback as the operator reads it: a number to two decimals, "—" before any."""
    from rtcontrol.console.model import feedback_number

    number = feedback_number(value) if value is not None else None
    return "—" if number is None else f"{number:.2f}"


class _SmallPanel(Panel):
    def sizeHint(self) -> QtCore.QSize:
        return QtCore.QSize(260, 170)


class MainWindow(QtWidgets.QMainWindow):
    #: The operator closed the window (the app then closes the session and quits).
    closed = QtCore.Signal()

    def __init__(self, session: ConsoleSession, *, settings_store: QtCore.QSettings | None = None) -> None:
        super().__init__()
        self.session = session
        self.controller = session.controller
        self.store = settings_store or layout_store()
        self.setWindowTitle("rtcontrol — console")
        self.setWindowIcon(icon("app"))
        self.setDockOptions(
            QtWidgets.QMainWindow.DockOption.AnimatedDocks | QtWidgets.QMainWindow.DockOption.AllowTabbedDocks
        )
        self._busy: asyncio.Task[Any] | None = None

        model = self.controller.model
        self.setup = SetupPanel(self.controller.settings)
        self.scanner = ScannerPanel(model)
        self.slices = SlicesPanel(model)
        self.timecourses = TimecoursePanel(model)
        self.connections = ConnectionsPanel()
        self.log = LogPanel()
        self.afni = AfniPanel(self.controller)
        self.panels: list[Panel] = [
            self.setup, self.scanner, self.slices, self.timecourses, self.connections, self.afni, self.log,
        ]
        self.docks: dict[str, QtWidgets.QDockWidget] = {}
        Area = QtCore.Qt.DockWidgetArea
        self.setCorner(QtCore.Qt.Corner.BottomLeftCorner, Area.LeftDockWidgetArea)  # setup column full height
        self._dock(self.setup, Area.LeftDockWidgetArea)
        self._dock(self.scanner, Area.LeftDockWidgetArea)
        self._dock(self.slices, Area.RightDockWidgetArea)
        self._dock(self.timecourses, Area.RightDockWidgetArea)
        self._dock(self.connections, Area.BottomDockWidgetArea)
        self._dock(self.log, Area.BottomDockWidgetArea)
        self.splitDockWidget(self.docks["Connections"], self.docks["Log"], QtCore.Qt.Orientation.Horizontal)
        # AFNI is set up like the run and mostly left alone: a tab behind Run setup, so the strip under the
        # views holds no tab bar and is only as tall as the connections table
        self._dock(self.afni, Area.LeftDockWidgetArea)
        self.setTabPosition(Area.LeftDockWidgetArea, QtWidgets.QTabWidget.TabPosition.North)
        self.tabifyDockWidget(self.docks["Run setup"], self.docks["AFNI"])
        self.docks["Run setup"].raise_()
        self.docks["AFNI"].dockLocationChanged.connect(
            lambda area: self.afni.set_strip(area in (Area.TopDockWidgetArea, Area.BottomDockWidgetArea)))

        self._default_state = self.saveState(LAYOUT_VERSION)  # what View > Reset layout brings back
        self._actions()
        self.summary = SummaryView(self)  # the end-of-run summary: shown as a run ends; View > Last run summary
        self.state_label = QtWidgets.QLabel("idle")
        self.statusBar().addPermanentWidget(self.state_label)
        self.setup.start_requested.connect(self.start_run)
        self.setup.stop_requested.connect(self.ask_stop)
        self.setup.next_requested.connect(self.next_run)
        self.setup.project_chosen.connect(self._load_project_settings)
        self.setup.browse_requested.connect(self._browse)

        self._unsubscribe = self.controller.events.subscribe(self.on_event)
        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(REPAINT_MS)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self._sides: tuple[int, int] | None = None  # setup column width, bottom strip height, as last seen
        self._resizing = False
        self.apply_display(self.controller.settings)
        self._fit_screen()
        self._sized = self._restore_layout()

    # --- construction -------------------------------------------------------------------
    def _fit_screen(self) -> None:
        """1560x960 where it fits; on a smaller screen (a 1366x768 laptop) maximised, never larger than it."""
        screen = self.screen() or QtGui.QGuiApplication.primaryScreen()
        room = screen.availableGeometry().size() if screen is not None else QtCore.QSize(1560, 960)
        self.resize(min(DEFAULT_SIZE[0], room.width()), min(DEFAULT_SIZE[1], room.height()))
        if room.width() < DEFAULT_SIZE[0] or room.height() < DEFAULT_SIZE[1]:
            self.setWindowState(self.windowState() | QtCore.Qt.WindowState.WindowMaximized)

    def _dock(self, panel: Panel, area: QtCore.Qt.DockWidgetArea) -> QtWidgets.QDockWidget:
        dock = QtWidgets.QDockWidget(panel.title, self)
        dock.setObjectName(f"dock-{panel.title.lower().replace(' ', '-')}")
        dock.setWidget(panel)
        dock.setFeatures(
            QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetFloatable
            | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetClosable
        )
        self.addDockWidget(area, dock)
        self.docks[panel.title] = dock
        return dock

    def _actions(self) -> None:
        tb = self.addToolBar("Run")
        tb.setObjectName("toolbar-run")
        tb.setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.start_action = QtGui.QAction(icon("start"), "Start", self)
        self.start_action.setShortcut(QtGui.QKeySequence("Ctrl+R"))
        self.start_action.setToolTip("Start the run (Ctrl+R)")
        self.start_action.triggered.connect(self.start_run)
        self.stop_action = QtGui.QAction(icon("stop"), "Stop", self)
        # Esc stays a shortcut (operators look for it) but a stray key never ends a run: every stop asks first
        self.stop_action.setShortcuts([QtGui.QKeySequence("Ctrl+."), QtGui.QKeySequence("Esc")])
        self.stop_action.setToolTip("Stop the run (Esc or Ctrl+.; asks before stopping)")
        self.stop_action.triggered.connect(self.ask_stop)
        self.stop_action.setEnabled(False)
        self.next_action = QtGui.QAction(icon("next"), "Next run", self)
        self.next_action.triggered.connect(self.next_run)
        load = QtGui.QAction(icon("open"), "Load settings…", self)
        load.setShortcut(QtGui.QKeySequence.StandardKey.Open)
        load.triggered.connect(self.load_settings)
        save = QtGui.QAction(icon("save"), "Save settings…", self)
        save.setShortcut(QtGui.QKeySequence.StandardKey.Save)
        save.triggered.connect(self.save_settings)
        for a in (self.start_action, self.stop_action, self.next_action):
            tb.addAction(a)
        tb.addSeparator()
        tb.addAction(load)
        tb.addAction(save)
        spacer = QtWidgets.QWidget()
        spacer.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Preferred)
        tb.addWidget(spacer)
        self.banner = QtWidgets.QLabel("IDLE")
        set_role(self.banner, "banner-idle")
        tb.addWidget(self.banner)
        for a in (self.start_action, self.stop_action, self.next_action, load, save):
            self.addAction(a)
        file_menu = self.menuBar().addMenu("&File")
        shot = file_menu.addAction("Save screenshot…")
        shot.triggered.connect(self.save_screenshot_as)
        file_menu.addSeparator()
        self.quit_action = file_menu.addAction("Quit")
        self.quit_action.setShortcut(QtGui.QKeySequence("Ctrl+Q"))
        self.quit_action.triggered.connect(self.close)  # a running run is asked about in closeEvent
        self.addAction(self.quit_action)
        view = self.view_menu = self.menuBar().addMenu("&View")
        for dock in self.docks.values():
            view.addAction(dock.toggleViewAction())
        self.view_separator = view.addSeparator()
        self.reset_action = view.addAction("Reset layout")
        self.reset_action.triggered.connect(self.reset_layout)
        view.addSeparator()
        lr = view.addMenu("Left/right on the live views")
        group = QtGui.QActionGroup(self)
        self.convention_actions: dict[str, QtGui.QAction] = {}
        for name, text in (("radiological", "Radiological (patient's right on the screen's left)"),
                           ("neurological", "Neurological (patient's left on the screen's left)")):
            a = lr.addAction(text)
            a.setCheckable(True)
            a.setChecked(name == self.controller.settings.display.left_right)
            a.triggered.connect(lambda _=False, name=name: self.set_display(left_right=name))
            group.addAction(a)
            self.convention_actions[name] = a
        run_menu = self.menuBar().addMenu("&Run")
        for a in (self.start_action, self.stop_action, self.next_action, load, save):
            run_menu.addAction(a)
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction("About rtcontrol").triggered.connect(self.about)

    # --- events -------------------------------------------------------------------------
    def on_event(self, event: Any) -> None:
        for panel in self.panels:
            panel.on_event(event)
        self.summary.on_event(event)
        if isinstance(event, ev.StateChanged):
            running = event.state in (ev.RUNNING, ev.STOPPING)
            self.start_action.setEnabled(not running)
            self.stop_action.setEnabled(running)
            self.next_action.setEnabled(not running)
            text = event.state + (f" — {event.detail}" if event.detail else "")
            self.state_label.setText(text)
            if event.state == ev.RUNNING:
                # the form shows the run being recorded (a simulated scan may have taken the next free number)
                self.setup.set_settings(self.controller.settings)
        elif isinstance(event, ev.LogMessage) and event.level == "error":
            self.statusBar().showMessage(event.text, 10000)
        elif isinstance(event, ev.RunEnded):
            # ready for the next run: the same run number again would be refused (it is recorded)
            self.setup.set_settings(self.controller.settings.next_run())
            self.statusBar().showMessage(f"run {event.run} ended ({event.reason}); the next run is "
                                         f"number {self.controller.settings.run.run + 1}", 15000)

    def attach_controller(self, controller: Any) -> None:
        """Show another controller (benchmarks, tests): its events and its model."""
        self._unsubscribe()
        self.controller = controller
        self.slices.model = controller.model
        self.timecourses.model = controller.model
        self.scanner.model = controller.model
        self._unsubscribe = controller.events.subscribe(self.on_event)

    def refresh(self) -> None:
        if self.isVisible() and not self._resizing:
            self._sides = (self._left_dock().width(), self.docks["Connections"].height())
        for panel in self.panels:
            panel.refresh()
        self._update_banner()
        label = getattr(self, "feedback_value", None)
        if label is not None:
            text = feedback_text(self.controller.model.last_feedback_value)
            if label.text() != text:
                label.setText(text)

    def add_subject_view(self, view: QtWidgets.QWidget) -> None:
        """Dock the embedded subject agent's built-in display: what the person in the scanner sees."""
        view.unsetCursor()
        view.setMinimumSize(160, 110)  # the strip under the views stays short at 1366x768
        holder = _SmallPanel()
        holder.title = "Subject display"
        row = QtWidgets.QHBoxLayout(holder)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(view, 1)
        # the latest feedback value as a number beside what the subject sees
        self.feedback_value = QtWidgets.QLabel("—")
        self.feedback_value.setObjectName("big")
        self.feedback_value.setToolTip("The latest feedback value sent to the subject")
        self.feedback_value.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.feedback_value.setMinimumWidth(70)
        side = QtWidgets.QVBoxLayout()
        side.addStretch(1)
        side.addWidget(QtWidgets.QLabel("feedback"), 0, QtCore.Qt.AlignmentFlag.AlignHCenter)
        side.addWidget(self.feedback_value)
        side.addStretch(1)
        row.addLayout(side)
        self.subject_view = view
        dock = self._dock(holder, QtCore.Qt.DockWidgetArea.BottomDockWidgetArea)
        self.splitDockWidget(self.docks["Log"], dock, QtCore.Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["Log"], dock], [500, 260], QtCore.Qt.Orientation.Horizontal)
        self.view_menu.insertAction(self.view_separator, dock.toggleViewAction())
        self._default_state = self.saveState(LAYOUT_VERSION)
        state = self.store.value("state")
        if state is not None:
            self.restoreState(state, LAYOUT_VERSION)
        else:
            self.default_sizes()
        self.activateWindow()  # the display opened as its own window first and took the focus

    # --- run control --------------------------------------------------------------------
    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(self._report)
        self._busy = task
        return task

    def _report(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.setup.show_error(str(exc))
            self.controller.error(str(exc))

    def start_run(self) -> asyncio.Task[Any] | None:
        if self.controller.running:
            return None
        s = self.setup.checked_settings()
        if s is None:
            return None
        self.scanner.set_run(s.run.tr, s.run.expected_volumes, s.run.watch_folder)
        self.timecourses.set_expected(s.run.expected_volumes)
        task = asyncio.ensure_future(self.session.start_run(s))
        task.add_done_callback(self._report_start)
        self._busy = task
        return task

    def _report_start(self, task: asyncio.Task[Any]) -> None:
        """A run the recording cannot hold is refused before it starts: say so in a message box too
        (the controller has already logged it)."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        if not isinstance(exc, RecordingError):
            self._report(task)
            return
        self.setup.show_error(str(exc))
        box = QtWidgets.QMessageBox(QtWidgets.QMessageBox.Icon.Warning, "Run not started",
                                    f"The run was not started: it could not be recorded.\n\n{exc}",
                                    QtWidgets.QMessageBox.StandardButton.Ok, self)
        box.setObjectName("run-refused")
        box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()  # not modal to the loop: the window keeps painting
        self.refused_box = box

    def ask_stop(self) -> QtWidgets.QMessageBox | None:
        """Ask before stopping a running run (Esc, Ctrl+., the Stop button): a stray key must not end a
        run. The box does not block the loop; its default and its Esc answer are "Keep running"."""
        if not self.controller.running:
            return None
        box = getattr(self, "stop_box", None)
        if box is None:  # one box, kept: asked again it is the same question
            box = QtWidgets.QMessageBox(QtWidgets.QMessageBox.Icon.Question, "Stop the run?", "",
                                        QtWidgets.QMessageBox.StandardButton.NoButton, self)
            box.setObjectName("confirm-stop")
            stop = box.addButton("Stop the run", QtWidgets.QMessageBox.ButtonRole.DestructiveRole)
            keep = box.addButton("Keep running", QtWidgets.QMessageBox.ButtonRole.RejectRole)
            box.setDefaultButton(keep)
            box.setEscapeButton(keep)
            box.buttonClicked.connect(lambda button: self.stop_run() if button is stop else None)
            self.stop_box = box
        if not box.isVisible():
            box.setText(f"Stop run {self.controller.model.run or ''} now? The scanner may still be sending "
                        "volumes; what arrived so far is kept.")
            box.open()
        return box

    def stop_run(self) -> asyncio.Task[Any] | None:
        """Stop now, without asking (the confirmed answer, closing the window, tests)."""
        if not self.controller.running:
            return None
        return self._spawn(self.session.stop_run())

    def next_run(self) -> None:
        if self.controller.running:
            return
        s = self.setup.checked_settings()
        if s is not None:
            self.setup.set_settings(s.next_run())

    def _load_project_settings(self, name: str) -> None:
        if self.controller.worker is not None:
            self._spawn(self.controller.project_settings(name))

    def _browse(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Scanner export folder", self.setup.watch.text())
        if folder:
            self.setup.watch.setText(folder)

    def load_settings(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Load run settings", "", "Run settings (*.toml)")
        if path:
            self.load_settings_from(Path(path))

    def load_settings_from(self, path: Path) -> bool:
        try:
            s = settings_io.load(path)
        except settings_io.SettingsError as exc:
            self.setup.show_error(str(exc))
            self.controller.error(str(exc))
            return False
        self.setup.set_settings(s)
        self.apply_display(s)
        self.controller.info(f"settings loaded from {path}")
        return True

    def save_settings(self) -> None:
        s = self.setup.checked_settings()
        if s is None:
            return
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save run settings", f"{s.run_id}.toml",
                                                        "Run settings (*.toml)")
        if path:
            settings_io.save(s, path)
            self.controller.info(f"settings saved to {path}")

    # --- interrupted runs ------------------------------------------------------------------
    def offer_interrupted(self, runs: list[tuple[Path, str]]) -> QtWidgets.QDialog | None:
        """Ask (without blocking the loop) whether to finish the runs an earlier session left open."""
        if not runs:
            return None
        from rtcontrol.gui.interrupted_dialog import InterruptedDialog

        dialog = InterruptedDialog(runs, self)
        dialog.finish_requested.connect(lambda folders: self._spawn(self._finish_interrupted(folders)))
        dialog.rejected.connect(lambda: self.controller.info(
            f"{len(runs)} interrupted run(s) left for later: they are offered again at the next start, or run "
            f"python -m rtcontrol.recording finish {self.controller.runs_dir}", "recording"))
        dialog.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        self.interrupted_dialog = dialog
        return dialog

    async def _finish_interrupted(self, folders: list[Path]) -> list[Path]:
        done = []
        for folder in folders:
            try:
                done.append(await self.controller.finish_interrupted(folder))
            except Exception:
                continue  # the controller logged why; the others still get finished
        return done

    # --- trust on first use ---------------------------------------------------------------
    def trust_prompt(self, peer: str, fingerprint: str) -> asyncio.Future[bool]:
        """Ask the operator, without blocking the loop; resolves to their answer."""
        future: asyncio.Future[bool] = asyncio.get_event_loop().create_future()
        box = ask_trust(self, peer, fingerprint)

        def done(result: int) -> None:
            if not future.done():
                future.set_result(result == int(QtWidgets.QMessageBox.StandardButton.Yes.value))

        box.finished.connect(done)
        box.open()
        self._trust_box = box
        return future

    # --- layout -------------------------------------------------------------------------
    def _restore_layout(self) -> bool:
        geometry = self.store.value("geometry")
        state = self.store.value("state")
        if geometry is not None:
            self.restoreGeometry(geometry)
        return state is not None and bool(self.restoreState(state, LAYOUT_VERSION))

    def default_sizes(self) -> None:
        """First-run proportions: a narrow setup column, the views large, a short strip of status below."""
        H, V = QtCore.Qt.Orientation.Horizontal, QtCore.Qt.Orientation.Vertical
        w, h = max(self.width(), 800), max(self.height(), 600)
        d = self.docks
        left = min(340, max(280, int(w * 0.21)))  # 340 px on a large screen, about 290 at 1366
        self.resizeDocks([d["Run setup"], d["Live views"]], [left, w - left], H)
        bottom = max(150, int(h * 0.2))
        self.resizeDocks([d["Connections"]], [bottom], V)
        # the dock layout honours size hints over resizeDocks on first show: cap the strip briefly
        strip = [dock for name, dock in d.items() if name in ("Connections", "Log", "Subject display")]
        for dock in strip:
            dock.setMaximumHeight(bottom)

        def uncap() -> None:
            for dock in strip:
                dock.setMaximumHeight(16777215)

        QtCore.QTimer.singleShot(100, self, uncap)
        scanner = max(int(h * 0.38), d["Scanner"].sizeHint().height())  # its numbers whole, setup scrolls
        self.resizeDocks([d["Run setup"], d["Scanner"]], [h - scanner, scanner], V)
        self.resizeDocks([d["Live views"], d["Timecourses"]], [int((h - bottom) * 0.57), int((h - bottom) * 0.43)], V)
        bottoms = [d["Connections"], d["Log"]] + ([d["Subject display"]] if "Subject display" in d else [])
        self.resizeDocks(bottoms, [int(w * 0.42), int(w * 0.34), int(w * 0.18)][: len(bottoms)], H)

    def showEvent(self, event: QtGui.QShowEvent) -> None:
        super().showEvent(event)
        if not self._sized:
            self._sized = True
            QtCore.QTimer.singleShot(50, self, self.default_sizes)

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        """A larger (or smaller) window changes the live views and the timecourses: the setup column and the
        bottom strip keep their size (Qt's dock layout would share the change among all docks)."""
        super().resizeEvent(event)
        if self._sides is not None and event.oldSize().isValid():
            self._resizing = True
            QtCore.QTimer.singleShot(0, self, self._keep_sides)  # dropped if the window is gone

    def _keep_sides(self) -> None:
        if self._sides is None:
            return
        left, bottom = self._sides
        left, bottom = min(left, int(self.width() * SIDE_SHARE)), min(bottom, int(self.height() * SIDE_SHARE))
        H, V = QtCore.Qt.Orientation.Horizontal, QtCore.Qt.Orientation.Vertical
        d = self.docks
        self.resizeDocks([self._left_dock(), d["Live views"]], [left, self.width() - left], H)
        top = self.docks["Live views"].height() + self.docks["Timecourses"].height()
        views = d["Live views"].height() / max(1, top)
        rest = top + d["Connections"].height() - bottom
        self.resizeDocks([d["Connections"]], [bottom], V)
        self.resizeDocks([d["Live views"], d["Timecourses"]], [int(rest * views), rest - int(rest * views)], V)
        self._resizing = False

    def _left_dock(self) -> QtWidgets.QDockWidget:
        """The left column's dock on show (Run setup, or AFNI when its tab is raised): the one to measure
        and resize (a dock behind a tab keeps a stale size)."""
        shown = [d for t, d in self.docks.items()  # behind a tab a dock stays "visible", moved off screen
                 if t in ("Run setup", "AFNI") and not d.visibleRegion().isEmpty()]
        return shown[0] if shown else self.docks["Run setup"]

    def save_layout(self) -> None:
        self.store.setValue("geometry", self.saveGeometry())
        self.store.setValue("state", self.saveState(LAYOUT_VERSION))
        self.store.sync()

    def reset_layout(self) -> None:
        """Back to the default layout now: every dock in its place and shown, the default proportions
        (a dock trapped in another strip comes back too). What closing saves is then this layout."""
        for dock in self.docks.values():
            dock.setFloating(False)
            dock.setMinimumSize(0, 0)
            dock.setMaximumSize(16777215, 16777215)
        self.restoreState(self._default_state, LAYOUT_VERSION)
        for dock in self.docks.values():
            dock.show()
        self.docks["Run setup"].raise_()
        self.default_sizes()
        self.store.remove("state")
        self.store.remove("geometry")
        self.controller.info("the window layout is back to the default")

    def banner_state(self) -> tuple[str, str]:
        """(text, role) of the run state banner: idle / waiting for the first volume / running / ended."""
        state, model = self.controller.state, self.controller.model
        if state in (ev.RUNNING, ev.STOPPING):
            if model.volumes == 0:
                return "WAITING FOR THE FIRST VOLUME", "banner-waiting"
            return f"RUNNING · volume {model.last_index + 1}", "banner-running"
        if state == ev.ENDED:
            return f"ENDED · {model.volumes} volumes", "banner-ended"
        return "IDLE", "banner-idle"

    def _update_banner(self) -> None:
        text, role = self.banner_state()
        if self.banner.text() != text:
            self.banner.setText(text)
            set_role(self.banner, role)

    # --- file and help ----------------------------------------------------------------------
    def save_screenshot(self, path: Path) -> Path:
        """The whole window as PNG (for a lab notebook); raises OSError if it cannot be written."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.grab().save(str(path), "PNG"):
            raise OSError(f"could not write the screenshot to {path}")
        self.controller.info(f"screenshot saved to {path}")
        return path

    def save_screenshot_as(self) -> None:
        stamp = QtCore.QDateTime.currentDateTime().toString("yyyyMMdd-HHmmss")
        name = f"{self.controller.model.run or 'console'}-{stamp}.png"
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save screenshot", name, "PNG image (*.png)")
        if path:
            try:
                self.save_screenshot(Path(path))
            except OSError as exc:
                self.controller.error(str(exc))

    def about_text(self) -> str:
        from rtcontrol import __version__
        from rtcontrol.paths import app_root

        return (f"rtcontrol {__version__}: a real-time fMRI control room.\n\n"
                f"User's guide: {app_root() / 'README.md'}")

    def about(self) -> None:
        QtWidgets.QMessageBox.about(self, "About rtcontrol", self.about_text())

    # --- display settings -------------------------------------------------------------------
    def set_display(self, *, left_right: str | None = None, fd_threshold: float | None = None) -> None:
        """Change how the run is shown, at once; kept in the run settings ([display])."""
        base = self.setup._base
        values = {k: v for k, v in (("left_right", left_right), ("fd_threshold", fd_threshold)) if v is not None}
        s = base.with_values("display", **values)
        self.setup._base = s
        self.apply_display(s)

    def apply_display(self, s: settings_io.RunSettings) -> None:
        self.slices.set_convention(s.display.left_right)
        self.timecourses.set_fd_threshold(s.display.fd_threshold)
        self.scanner.set_fd_threshold(s.display.fd_threshold)
        action = self.convention_actions.get(s.display.left_right)
        if action is not None:
            action.setChecked(True)

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        if self.controller.running and self.isVisible() and not getattr(self, "force_close", False):
            answer = QtWidgets.QMessageBox.question(
                self, "A run is going",
                f"Run {self.controller.model.run} is still running. Stop it and close the console?",
            )
            if answer != QtWidgets.QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        self.save_layout()
        self.timer.stop()
        self._unsubscribe()
        super().closeEvent(event)
        self.closed.emit()
