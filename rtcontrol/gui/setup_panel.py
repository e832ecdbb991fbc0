"""Run setup: the run settings, a form drawn from the project's declared settings, and the run buttons."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from PySide6 import QtCore, QtWidgets

from rtcontrol.console import events as ev
from rtcontrol.console.settings import ONSET_MODES, RunSettings, SettingsError
from rtcontrol.gui.panel import Panel, set_role
from rtcontrol.gui.theme import icon


class WheelGuard(QtCore.QObject):
    """Only a focused field takes the mouse wheel: over an unfocused spin box or list the wheel scrolls
    the form (``target``) instead of changing a value the operator never meant to touch."""

    def __init__(self, target: QtWidgets.QAbstractScrollArea | None, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.target = target

    def guard(self, widget: QtWidgets.QWidget) -> None:
        for w in [widget, *widget.findChildren(QtWidgets.QWidget)]:
            if isinstance(w, (QtWidgets.QAbstractSpinBox, QtWidgets.QComboBox)):
                w.setFocusPolicy(QtCore.Qt.FocusPolicy.StrongFocus)  # a click focuses, the wheel does not
                w.installEventFilter(self)

    def eventFilter(self, obj: QtCore.QObject, event: QtCore.QEvent) -> bool:
        if event.type() == QtCore.QEvent.Type.Wheel and isinstance(obj, QtWidgets.QWidget) and not obj.hasFocus():
            if self.target is not None:
                QtWidgets.QApplication.sendEvent(self.target.verticalScrollBar(), event)
            return True
        return False


class ProjectForm(QtWidgets.QWidget):
    """Widgets for a project's ``Setting`` dicts (name, default, type, help, choices, minimum, maximum)."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.layout_ = QtWidgets.QFormLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        # a long name beside a wide field goes above it: the setup column stays narrow
        self.layout_.setRowWrapPolicy(QtWidgets.QFormLayout.RowWrapPolicy.WrapLongRows)
        self.fields: dict[str, tuple[dict[str, Any], Any]] = {}
        self.wheel_guard: WheelGuard | None = None

    def set_settings(self, declared: list[dict[str, Any]], values: dict[str, Any]) -> None:
        while self.layout_.rowCount():
            self.layout_.removeRow(0)
        self.fields = {}
        for d in declared:
            value = values.get(d["name"], d.get("default"))
            widget = _widget_for(d, value)
            widget.setToolTip(d.get("help") or "")
            self.layout_.addRow(d["name"].replace("_", " "), widget)
            self.fields[d["name"]] = (d, widget)
            if self.wheel_guard is not None:
                self.wheel_guard.guard(widget)

    def values(self) -> dict[str, Any]:
        return {name: _value_of(d, w) for name, (d, w) in self.fields.items()}


def _widget_for(d: dict[str, Any], value: Any) -> QtWidgets.QWidget:
    kind = d.get("type", "float")
    lo = d.get("minimum")
    hi = d.get("maximum")
    if kind == "float":
        real = QtWidgets.QDoubleSpinBox()
        real.setDecimals(3)
        real.setRange(-1e6 if lo is None else lo, 1e6 if hi is None else hi)
        real.setValue(float(value))
        return real
    if kind == "int":
        integer = QtWidgets.QSpinBox()
        integer.setRange(-(10**6) if lo is None else int(lo), 10**6 if hi is None else int(hi))
        integer.setValue(int(value))
        return integer
    if kind == "bool":
        check = QtWidgets.QCheckBox()
        check.setChecked(bool(value))
        return check
    if kind == "choice":
        combo = QtWidgets.QComboBox()
        for c in d.get("choices") or []:
            combo.addItem(str(c), c)
        combo.setCurrentIndex(max(0, combo.findText(str(value))))
        return combo
    if kind == "vector3":
        line = QtWidgets.QLineEdit(", ".join(f"{float(v):g}" for v in list(value or [0, 0, 0])[:3]))
        line.setProperty("vector3", True)
        line.setPlaceholderText("x, y, z")
        return line
    return QtWidgets.QLineEdit("" if value is None else str(value))


def _value_of(d: dict[str, Any], w: QtWidgets.QWidget) -> Any:
    if isinstance(w, (QtWidgets.QDoubleSpinBox, QtWidgets.QSpinBox)):
        return w.value()
    if isinstance(w, QtWidgets.QCheckBox):
        return w.isChecked()
    if isinstance(w, QtWidgets.QComboBox):
        return w.currentData()
    if isinstance(w, QtWidgets.QLineEdit) and w.property("vector3"):
        parts = [p for p in w.text().replace(",", " ").split() if p]
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            numbers = []
        if len(numbers) != 3:
            raise SettingsError(f"project setting {d['name']}: {w.text()!r} is not three numbers (x, y, z)")
        return numbers
    if isinstance(w, QtWidgets.QLineEdit):
        return w.text()
    raise TypeError(f"no value reader for {type(w).__name__}")


class SetupPanel(Panel):
    title = "Run setup"
    icon_name = "open"

    start_requested = QtCore.Signal()
    stop_requested = QtCore.Signal()
    next_requested = QtCore.Signal()
    project_chosen = QtCore.Signal(str)
    browse_requested = QtCore.Signal()

    def __init__(self, settings: RunSettings, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self._base = settings
        self._declared: dict[str, list[dict[str, Any]]] = {}

        self.subject = QtWidgets.QLineEdit()
        self.session = QtWidgets.QLineEdit()
        self.run_number = QtWidgets.QSpinBox()
        self.run_number.setRange(1, 999)
        self.task = QtWidgets.QLineEdit()
        self.tr_field = QtWidgets.QDoubleSpinBox()  # not "tr": that would hide QObject.tr
        self.tr_field.setRange(0.05, 60)
        self.tr_field.setDecimals(3)
        self.tr_field.setSuffix(" s")
        self.expected = QtWidgets.QSpinBox()
        self.expected.setRange(0, 100000)
        self.expected.setSpecialValueText("unknown")
        self.watch = QtWidgets.QLineEdit()
        self.watch.setPlaceholderText("the scanner's export folder (empty: a temporary folder)")
        browse = QtWidgets.QToolButton()
        browse.setText("…")
        browse.setToolTip("Choose the watch folder")
        browse.clicked.connect(self.browse_requested)
        watch_row = QtWidgets.QHBoxLayout()
        watch_row.addWidget(self.watch, 1)
        watch_row.addWidget(browse)
        self.polling = QtWidgets.QCheckBox("poll (network share)")
        self.polling.setToolTip("List the folder instead of waiting for file events: for network shares")
        self.project = QtWidgets.QComboBox()
        self.project.setEditable(True)
        self.project.currentTextChanged.connect(self._project_changed)
        self.onset = QtWidgets.QComboBox()
        self.onset.addItems(list(ONSET_MODES))
        self.delay = QtWidgets.QDoubleSpinBox()
        self.delay.setRange(0, 600)
        self.delay.setDecimals(3)
        self.delay.setSuffix(" s")
        self.project_form = ProjectForm()
        # [files] allowed_folders: the only folders on this console the worker's project may read and write
        self.allowed = QtWidgets.QListWidget()
        self.allowed.setObjectName("allowed-folders")
        self.allowed.setToolTip("Folders on this console the project may read and write (ctx.files); "
                                "nothing else is reachable")
        self.allowed.setMaximumHeight(72)
        self.add_folder = QtWidgets.QPushButton("Add folder…")
        self.add_folder.clicked.connect(self._choose_allowed_folder)
        self.remove_folder = QtWidgets.QPushButton("Remove")
        self.remove_folder.clicked.connect(self.remove_allowed_folder)
        folder_buttons = QtWidgets.QHBoxLayout()
        folder_buttons.addWidget(self.add_folder)
        folder_buttons.addWidget(self.remove_folder)
        folder_buttons.addStretch(1)
        allowed_box = QtWidgets.QVBoxLayout()
        allowed_box.addWidget(self.allowed)
        allowed_box.addLayout(folder_buttons)
        self.plugins = QtWidgets.QLabel("")
        self.plugins.setObjectName("plugins")
        self.plugins.setWordWrap(True)
        set_role(self.plugins, "caption")

        form = QtWidgets.QFormLayout()
        form.addRow("subject", self.subject)
        form.addRow("session", self.session)
        form.addRow("run", self.run_number)
        form.addRow("task", self.task)
        form.addRow("TR", self.tr_field)
        form.addRow("volumes", self.expected)
        form.addRow("watch folder", watch_row)
        form.addRow("", self.polling)
        form.addRow("project", self.project)
        form.addRow("plugins", self.plugins)
        form.addRow("feedback onset", self.onset)
        form.addRow("delay", self.delay)
        form.addRow("project files", QtWidgets.QWidget())  # the list under its label, the column's whole width
        form.addRow(allowed_box)
        project_box = QtWidgets.QGroupBox("project settings")
        QtWidgets.QVBoxLayout(project_box).addWidget(self.project_form)

        self.start_button = QtWidgets.QPushButton(icon("start"), "Start")
        self.start_button.setObjectName("start")
        self.start_button.setToolTip("Start the run (Ctrl+R)")
        self.stop_button = QtWidgets.QPushButton(icon("stop"), "Stop")
        self.stop_button.setObjectName("stop")
        self.stop_button.setToolTip("Stop the run (Esc or Ctrl+.; asks before stopping)")
        self.next_button = QtWidgets.QPushButton(icon("next"), "Next run")
        self.next_button.setToolTip("Count the run number up, ready for the next run")
        self.start_button.clicked.connect(self.start_requested)
        self.stop_button.clicked.connect(self.stop_requested)
        self.next_button.clicked.connect(self.next_requested)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.next_button)
        self.message = QtWidgets.QLabel("")
        self.message.setWordWrap(True)

        inner = QtWidgets.QWidget()
        v = QtWidgets.QVBoxLayout(inner)
        v.addLayout(form)
        v.addWidget(project_box)
        v.addStretch(1)
        scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(inner)
        self.scroll_area = scroll  # not "scroll": that would hide QWidget.scroll
        self._fit_width()
        self.wheel_guard = WheelGuard(scroll, self)
        self.wheel_guard.guard(inner)
        self.project_form.wheel_guard = self.wheel_guard
        self.locked_note = QtWidgets.QLabel("settings are locked while the run goes")
        self.locked_note.setObjectName("caption")
        self.locked_note.setVisible(False)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.locked_note)
        layout.addWidget(scroll, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.message)
        self.set_settings(settings)
        self.set_running(False)

    def _fit_width(self) -> None:
        """The column is never narrower than the form (it scrolls up and down, never sideways)."""
        form = self.scroll_area.widget()
        if form is not None:
            bar = self.scroll_area.verticalScrollBar().sizeHint().width()
            self.scroll_area.setMinimumWidth(form.minimumSizeHint().width() + bar)

    # --- settings <-> fields ---------------------------------------------------------------
    def set_settings(self, s: RunSettings) -> None:
        self._base = s
        r = s.run
        self.subject.setText(r.subject)
        self.session.setText(r.session)
        self.run_number.setValue(r.run)
        self.task.setText(r.task)
        self.tr_field.setValue(r.tr)
        self.expected.setValue(r.expected_volumes)
        self.watch.setText(r.watch_folder)
        self.polling.setChecked(r.polling)
        if self.project.findText(s.project.name) < 0:
            self.project.addItem(s.project.name)
        self.project.setCurrentText(s.project.name)
        self.onset.setCurrentText(s.feedback.onset)
        self.delay.setValue(s.feedback.delay)
        self.project_form.set_settings(self._declared.get(s.project.name, []), s.project.settings)
        self.allowed.clear()
        self.allowed.addItems(list(s.files.allowed_folders))

    def allowed_folders(self) -> tuple[str, ...]:
        return tuple(self.allowed.item(i).text() for i in range(self.allowed.count()))

    def add_allowed_folder(self, folder: str) -> None:
        folder = folder.strip()
        if folder and folder not in self.allowed_folders():
            self.allowed.addItem(folder)

    def remove_allowed_folder(self) -> None:
        current = self.allowed.currentItem()
        for item in self.allowed.selectedItems() or ([current] if current else []):
            self.allowed.takeItem(self.allowed.row(item))

    def _choose_allowed_folder(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "A folder the project may read and write")
        if folder:
            self.add_allowed_folder(folder)

    def settings(self) -> RunSettings:
        """The settings in the fields, validated (raises :class:`SettingsError`)."""
        b = self._base
        s = replace(
            b,
            run=replace(
                b.run,
                subject=self.subject.text().strip(),
                session=self.session.text().strip(),
                run=self.run_number.value(),
                task=self.task.text().strip(),
                tr=self.tr_field.value(),
                expected_volumes=self.expected.value(),
                watch_folder=self.watch.text().strip(),
                polling=self.polling.isChecked(),
            ),
            project=replace(
                b.project,
                name=self.project.currentText().strip(),
                settings=self.project_form.values() if self.project_form.fields else dict(b.project.settings),
            ),
            feedback=replace(b.feedback, onset=self.onset.currentText(), delay=self.delay.value()),
            files=replace(b.files, allowed_folders=self.allowed_folders()),
        )
        return s.validate()

    def show_error(self, text: str) -> None:
        self.message.setText(text)
        set_role(self.message, "error" if text else "caption")

    def checked_settings(self) -> RunSettings | None:
        try:
            s = self.settings()
        except SettingsError as exc:
            self.show_error(str(exc))
            return None
        self.show_error("")
        return s

    # --- projects -----------------------------------------------------------------------
    def set_projects(self, projects: list[dict[str, Any]]) -> None:
        current = self.project.currentText()
        self.project.blockSignals(True)
        self.project.clear()
        for p in projects:
            name = str(p.get("name", ""))
            self.project.addItem(name)
            self.project.setItemData(self.project.count() - 1, p.get("description", ""),
                                     QtCore.Qt.ItemDataRole.ToolTipRole)
        if current and self.project.findText(current) < 0:
            self.project.addItem(current)
        self.project.setCurrentText(current)
        self.project.blockSignals(False)
        self._project_changed(self.project.currentText())

    def set_project_settings(self, project: str, declared: list[dict[str, Any]]) -> None:
        self._declared[project] = declared
        if project == self.project.currentText():
            values = self._base.project.settings if project == self._base.project.name else {}
            self.project_form.set_settings(declared, values)
            self._fit_width()

    def _project_changed(self, name: str) -> None:
        if name in self._declared:
            self.set_project_settings(name, self._declared[name])
        elif name:
            self.project_chosen.emit(name)

    def set_plugins(self, plugins: list[dict[str, Any]], errors: list[dict[str, Any]]) -> None:
        """The worker's plugins under the project chooser; broken ones in red with the reason on hover."""
        names = ", ".join(f"{p.get('name')} ({p.get('kind')})" for p in plugins) or "none"
        text = names + (f"; {len(errors)} failed to load" if errors else "")
        self.plugins.setText(text)
        tips = [f"{p.get('name')} ({p.get('kind')}): {p.get('description') or 'no description'}\n    {p.get('source')}"
                for p in plugins]
        tips += [f"FAILED: {e.get('source')}\n    {e.get('error')}" for e in errors]
        self.plugins.setToolTip("\n".join(tips) or "the worker has no plugins")
        set_role(self.plugins, "error" if errors else "caption")

    # --- run state ----------------------------------------------------------------------
    def set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.next_button.setEnabled(not running)
        for w in (self.subject, self.session, self.run_number, self.task, self.tr_field, self.expected, self.watch,
                  self.polling, self.project, self.onset, self.delay, self.project_form, self.allowed,
                  self.add_folder, self.remove_folder):
            w.setEnabled(not running)
        self.locked_note.setVisible(running)

    def on_event(self, event: Any) -> None:
        if isinstance(event, ev.StateChanged):
            self.set_running(event.state in (ev.RUNNING, ev.STOPPING))
        elif isinstance(event, ev.ProjectsListed):
            self.set_projects(event.projects)
        elif isinstance(event, ev.PluginsListed):
            self.set_plugins(event.plugins, event.errors)
        elif isinstance(event, ev.ProjectSettingsListed):
            self.set_project_settings(event.project, event.settings)
