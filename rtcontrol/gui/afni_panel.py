"""The AFNI panel: where AFNI runs, on/off, what is happening, the metadata sent, AFNI's motion.

A view of a Qt-free :class:`rtcontrol.afni.link.AfniLink`. Given the console controller instead,
it takes (or creates and attaches) the controller's link. Link events only mark the panel dirty;
the repaint happens on a timer, so a burst of volumes costs the GUI nothing.
"""

from __future__ import annotations

from typing import Any

import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from rtcontrol.afni.link import AfniLink, MotionUpdate
from rtcontrol.afni.motion import MOTION_LABELS
from rtcontrol.afni.sender import SenderEvent
from rtcontrol.console.links import attach_to_console
from rtcontrol.gui.panel import Panel, caption, set_role
from rtcontrol.gui.setup_panel import WheelGuard

REPAINT_MS = 200
STATE_ROLE = {"sending": "ok", "idle": "ok", "connecting": "warn", "waiting": "warn", "error": "error", "off": ""}
CURVE_COLOURS = ("#e6550d", "#3182bd", "#31a354", "#fdae6b", "#9ecae1", "#a1d99b")


class AfniPanel(Panel):
    title = "AFNI"
    icon_name = "brain"

    def __init__(self, link_or_controller: Any, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.link: AfniLink = (
            link_or_controller if isinstance(link_or_controller, AfniLink) else attach_to_console(link_or_controller)
        )
        self._errors: list[str] = []
        self._motion_seen = -1
        self._build()
        self._unsubscribe = self.link.add_listener(self._on_link_event)
        self._load_settings()
        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(REPAINT_MS)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.dirty = True
        self.refresh()

    # --- construction -------------------------------------------------------------------
    def _build(self) -> None:
        self.enable_box = QtWidgets.QCheckBox("Send volumes to AFNI")
        self.enable_box.setToolTip("Send every volume to AFNI's realtime plugin (afni -rt)")
        self.enable_box.toggled.connect(self._toggled)
        self.state_label = QtWidgets.QLabel("off")
        self.state_label.setWordWrap(True)

        self.host_edit = QtWidgets.QLineEdit()
        self.host_edit.setPlaceholderText("host running afni -rt")
        self.control_spin = self._port_spin()
        self.data_spin = self._port_spin()
        self.channel_combo = QtWidgets.QComboBox()
        self.channel_combo.addItems(["TCP", "Shared memory (AFNI on this computer)"])
        self.shm_edit = QtWidgets.QLineEdit()
        self.channel_combo.currentIndexChanged.connect(lambda i: self.shm_edit.setEnabled(i == 1))
        self.note_edit = QtWidgets.QLineEdit()
        self.note_edit.setPlaceholderText("optional NOTE attached to AFNI's dataset")
        self.keep_box = QtWidgets.QCheckBox("Keep the connection between runs (end-of-run marker)")
        self.motion_box = QtWidgets.QCheckBox("Receive AFNI's motion (AFNI_REALTIME_MP_HOST_PORT) on port")
        self.motion_spin = self._port_spin()
        motion_row = QtWidgets.QHBoxLayout()
        motion_row.addWidget(self.motion_box)
        motion_row.addWidget(self.motion_spin)

        form = QtWidgets.QFormLayout()
        form.addRow("Host", self.host_edit)
        form.addRow("Control port", self.control_spin)
        form.addRow("Data port", self.data_spin)
        form.addRow("Channel", self.channel_combo)
        form.addRow("Shared memory name", self.shm_edit)
        form.addRow("Note", self.note_edit)
        form.addRow(self.keep_box)
        form.addRow(motion_row)
        self.settings_box = QtWidgets.QWidget()
        self.settings_box.setLayout(form)
        self.wheel_guard = WheelGuard(None, self)  # a port changes only in a field the operator clicked
        self.wheel_guard.guard(self.settings_box)
        # the settings in their own window: the panel lives in a short strip under the views, and a form
        # of eight rows there would be clipped or scroll under the mouse; the status stays in the strip
        self.settings_dialog = QtWidgets.QDialog(self)
        self.settings_dialog.setWindowTitle("AFNI settings")
        self.settings_dialog.setObjectName("afni-settings")
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.settings_dialog.reject)
        self.settings_note = QtWidgets.QLabel("")
        self.settings_note.setObjectName("caption")
        self.settings_note.setWordWrap(True)
        box = QtWidgets.QVBoxLayout(self.settings_dialog)
        box.addWidget(self.settings_box)
        box.addWidget(self.settings_note)
        box.addWidget(buttons)
        self.settings_button = QtWidgets.QPushButton("Settings…")
        self.settings_button.setToolTip("Where AFNI runs, its ports, channel, note and motion")
        self.settings_button.clicked.connect(self.show_settings)

        self.sent_label = QtWidgets.QLabel("0")
        self.not_sent_label = QtWidgets.QLabel("0")
        self.runs_label = QtWidgets.QLabel("0")
        self.error_label = QtWidgets.QLabel("")
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        counts = QtWidgets.QHBoxLayout()
        for text, label in (("sent", self.sent_label), ("not sent", self.not_sent_label),
                            ("AFNI runs", self.runs_label)):
            counts.addWidget(caption(text))
            counts.addWidget(label)
            counts.addSpacing(8)
        counts.addStretch(1)

        self.header_view = QtWidgets.QPlainTextEdit()
        self.header_view.setReadOnly(True)
        self.header_view.setPlaceholderText("The metadata block sent at the start of each AFNI run appears here.")
        self.header_view.setMaximumBlockCount(200)
        self.header_view.setFont(QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.SystemFont.FixedFont))
        self.header_view.setToolTip("Metadata sent to AFNI at the start of each AFNI run")

        self.motion_label = QtWidgets.QLabel("AFNI motion: not listening")
        self.motion_label.setObjectName("caption")
        self.motion_label.setWordWrap(True)
        self.plot = self._motion_plot()

        top = QtWidgets.QHBoxLayout()
        top.addWidget(self.enable_box, 1)
        top.addWidget(self.settings_button)
        left = QtWidgets.QVBoxLayout()
        left.setSpacing(2)
        left.addLayout(top)
        left.addWidget(self.state_label)
        left.addLayout(counts)
        left.addWidget(self.error_label)
        left.addStretch(1)
        right = QtWidgets.QVBoxLayout()
        right.setSpacing(2)
        right.addWidget(self.motion_label)
        right.addWidget(self.plot, 1)
        self.box = QtWidgets.QBoxLayout(QtWidgets.QBoxLayout.Direction.TopToBottom, self)
        self.box.setContentsMargins(4, 4, 4, 4)
        self.box.addLayout(left, 0)
        self.box.addWidget(self.header_view, 2)
        self.box.addLayout(right, 3)

    def set_strip(self, strip: bool) -> None:
        """Side by side in a strip (docked above or below the views), one above the other in a column."""
        Direction = QtWidgets.QBoxLayout.Direction
        self.box.setDirection(Direction.LeftToRight if strip else Direction.TopToBottom)
        self.box.setStretch(0, 3 if strip else 0)

    def sizeHint(self) -> QtCore.QSize:  # a column beside the views, or a strip under them
        return QtCore.QSize(300, 400)

    def show_settings(self) -> QtWidgets.QDialog:
        """The settings window (not modal: the console keeps running). Locked while AFNI is on."""
        on = self.link.enabled
        self.settings_note.setText("Switch AFNI off to change these." if on else
                                   "Taken when AFNI is switched on.")
        self.settings_dialog.show()
        self.settings_dialog.raise_()
        return self.settings_dialog

    @staticmethod
    def _port_spin() -> QtWidgets.QSpinBox:
        spin = QtWidgets.QSpinBox()
        spin.setRange(1, 65535)
        return spin

    def _motion_plot(self) -> Any:
        plot = pg.PlotWidget()
        plot.setMinimumHeight(60)
        plot.addLegend(offset=(5, 5), labelTextSize="7pt", colCount=3)
        plot.getPlotItem().getAxis("left").setWidth(36)
        plot.showGrid(x=True, y=True, alpha=0.2)
        self.curves = [
            plot.plot([], [], pen=pg.mkPen(colour, width=1.5), name=label)
            for colour, label in zip(CURVE_COLOURS, MOTION_LABELS)
        ]
        return plot

    # --- settings <-> widgets ------------------------------------------------------------
    def _load_settings(self) -> None:
        s = self.link.settings
        self.host_edit.setText(s.host)
        self.control_spin.setValue(int(s.control_port))
        self.data_spin.setValue(int(s.data_port))
        self.channel_combo.setCurrentIndex(1 if s.use_shm else 0)
        self.shm_edit.setText(s.shm_name)
        self.shm_edit.setEnabled(s.use_shm)
        self.note_edit.setText(s.note or "")
        self.keep_box.setChecked(s.keep_connection)
        self.motion_box.setChecked(s.motion)
        self.motion_spin.setValue(int(s.motion_port))
        self.enable_box.blockSignals(True)
        self.enable_box.setChecked(self.link.enabled)
        self.enable_box.blockSignals(False)

    def apply_settings(self) -> None:
        """Copy the widgets into the link's settings (used when switching on)."""
        s = self.link.settings
        s.host = self.host_edit.text().strip()
        s.control_port = self.control_spin.value()
        s.data_port = self.data_spin.value()
        s.use_shm = self.channel_combo.currentIndex() == 1
        s.shm_name = self.shm_edit.text().strip() or s.shm_name
        s.note = self.note_edit.text().strip() or None
        s.keep_connection = self.keep_box.isChecked()
        s.motion = self.motion_box.isChecked()
        s.motion_port = self.motion_spin.value()

    def _toggled(self, on: bool) -> None:
        if on:
            self.apply_settings()
            try:
                self.link.settings.validate()
            except ValueError as exc:
                self._errors.append(str(exc))
                self.enable_box.blockSignals(True)
                self.enable_box.setChecked(False)
                self.enable_box.blockSignals(False)
                self.dirty = True
                return
        self.settings_box.setEnabled(not on)
        self.link.set_enabled(on)
        self.dirty = True

    # --- events ---------------------------------------------------------------------------
    def _on_link_event(self, event: Any) -> None:
        if isinstance(event, SenderEvent) and event.kind in ("error", "not_sent", "warning"):
            self._say(f"{event.kind.replace('_', ' ')}: {event.message.removeprefix('AFNI: ')}")
        elif isinstance(event, MotionUpdate) and event.kind == "error":
            self._say(event.message.removeprefix("AFNI: "))
        self.dirty = True

    def _say(self, text: str) -> None:
        """A problem once (the panel is already "AFNI"); a retry repeating it adds nothing, a change does."""
        if not self._errors or self._errors[-1] != text:
            self._errors = (self._errors + [text])[-5:]

    def on_event(self, event: Any) -> None:  # console events: nothing to do, the link reports itself
        pass

    def repaint_now(self) -> None:
        status = self.link.status
        on = self.link.enabled
        if self.enable_box.isChecked() != on and (self.link._switching is None or self.link._switching.done()):
            self.enable_box.blockSignals(True)
            self.enable_box.setChecked(on)
            self.enable_box.blockSignals(False)
            self.settings_box.setEnabled(not on)
        state = status.state if on else "off"
        self.state_label.setText(f"{state}: {status.detail}" if on and status.detail else state)
        set_role(self.state_label, STATE_ROLE.get(state, ""))
        self.sent_label.setText(str(status.volumes_sent))
        self.not_sent_label.setText(str(status.volumes_not_sent))
        self.runs_label.setText(str(status.runs_started))
        if self.header_view.toPlainText() != status.header_text:
            self.header_view.setPlainText(status.header_text)
        self.error_label.setText("\n".join(self._errors[-3:]))
        set_role(self.error_label, "error" if self._errors else "")
        self._repaint_motion()

    def _repaint_motion(self) -> None:
        motion = self.link.motion
        if motion.listening_on:
            n = len(motion.records)
            last = motion.records[-1].motion if n else None
            text = f"AFNI motion on {motion.listening_on}: run {motion.runs}, {n} TRs"
            if last is not None:
                text += "  (last: " + ", ".join(f"{v:+.2f}" for v in last) + ")"
            self.motion_label.setText(text)
        else:
            self.motion_label.setText("AFNI motion: not listening")
        if self.curves and len(motion.records) != self._motion_seen:
            self._motion_seen = len(motion.records)
            xs = [r.tr_index for r in motion.records]
            for i, curve in enumerate(self.curves):
                curve.setData(xs, [r.motion[i] for r in motion.records])

    def closeEvent(self, event: Any) -> None:  # Qt name
        self.timer.stop()
        self._unsubscribe()
        super().closeEvent(event)
