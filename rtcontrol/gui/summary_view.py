"""The end-of-run summary in the window: shown when a run ends, in a dialog that does not block anything (the
next run can start with it open), and again from View > Last run summary.

The summary is the controller's (``controller.last_summary``, already saved as ``summary.json``); this view
draws ``summary.png`` beside it (:mod:`rtcontrol.gui.summary_plot`) and shows both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6 import QtCore, QtGui, QtWidgets

from rtcontrol.console import events as ev
from rtcontrol.gui.summary_plot import write_png
from rtcontrol.recording.summary import SUMMARY_JSON, SUMMARY_PNG, RunSummary


class SummaryDialog(QtWidgets.QDialog):
    """One run's summary: the numbers as text, the timecourses as the saved picture, and where both are."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("run-summary")
        self.setModal(False)
        self.setWindowTitle("Run summary")
        self.heading = QtWidgets.QLabel()
        self.heading.setObjectName("summary-heading")
        self.heading.setWordWrap(True)
        font = self.heading.font()
        font.setPointSizeF(font.pointSizeF() * 1.2)
        font.setBold(True)
        self.heading.setFont(font)
        self.facts = QtWidgets.QLabel()
        self.facts.setObjectName("summary-facts")
        self.facts.setWordWrap(True)
        self.facts.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.picture = QtWidgets.QLabel()
        self.picture.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.picture.setMinimumSize(480, 360)
        self.picture.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Ignored)
        self.saved = QtWidgets.QLabel()
        self.saved.setObjectName("summary-saved")
        self.saved.setWordWrap(True)
        self.saved.setOpenExternalLinks(True)
        self.saved.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextBrowserInteraction)
        close = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.close)
        layout = QtWidgets.QVBoxLayout(self)
        for w in (self.heading, self.facts):
            layout.addWidget(w)
        layout.addWidget(self.picture, 1)
        layout.addWidget(self.saved)
        layout.addWidget(close)
        self._pixmap = QtGui.QPixmap()
        self.resize(1000, 860)

    def set_summary(self, summary: RunSummary, png: Path | None, run_dir: Path | None) -> None:
        missing = " — VOLUMES MISSING" if summary.missing else ""
        self.heading.setText(f"Run {summary.run} ended: {summary.reason}{missing}")
        self.facts.setText("\n".join(summary.text()))
        self._pixmap = QtGui.QPixmap(str(png)) if png is not None else QtGui.QPixmap()
        self._fit()
        if run_dir is None or not (run_dir / SUMMARY_JSON).is_file():
            self.saved.setText("Not saved: the run was not recorded.")
        else:
            url = QtCore.QUrl.fromLocalFile(str(run_dir)).toString()
            drawn = f" and {SUMMARY_PNG}" if png is not None else f" ({SUMMARY_PNG} could not be drawn)"
            files = SUMMARY_JSON + drawn
            self.saved.setText(f'Saved as {files} in <a href="{url}" style="color:#7fb2ff">{run_dir}</a>')

    def fit_screen(self, screen: QtCore.QRect) -> None:
        """At most 90 % of the screen (the Close button stays on a 1366x768 screen), centred on it."""
        self.resize(min(1000, int(screen.width() * 0.9)), min(860, int(screen.height() * 0.9)))
        self.move(screen.center() - self.rect().center())

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        if self._pixmap.isNull():
            self.picture.setText("(no picture)")
            return
        self.picture.setPixmap(self._pixmap.scaled(self.picture.size(), QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                                                   QtCore.Qt.TransformationMode.SmoothTransformation))


class SummaryView(QtCore.QObject):
    """Owns the window's summary dialog and its View menu entry; fed the window's controller events."""

    def __init__(self, window: Any) -> None:
        super().__init__(window)
        self.window = window
        self.summary: RunSummary | None = None
        self.png: Path | None = None
        self.run_dir: Path | None = None
        self.dialog: SummaryDialog | None = None
        self.action = window.view_menu.addAction("Last run summary…")
        self.action.setEnabled(False)
        self.action.triggered.connect(self.show)

    def on_event(self, event: Any) -> None:
        if isinstance(event, ev.RunEnded):  # drawn just after the event, not inside the controller's publish
            QtCore.QTimer.singleShot(0, self, self.run_ended)

    def run_ended(self) -> None:
        c = self.window.controller
        summary = c.last_summary
        if summary is None or summary is self.summary or not summary.received:
            return  # a run stopped before its first volume recorded nothing (its number is free again)
        self.summary, self.png, self.run_dir = summary, None, c.run_dir
        if c.run_dir is not None and (c.run_dir / SUMMARY_JSON).is_file():
            try:
                self.png = write_png(summary, c.run_dir / SUMMARY_PNG)
            except Exception as exc:  # the numbers are saved; the picture is a view of them
                c.error(f"{SUMMARY_PNG} could not be drawn in {c.run_dir}: {exc}", "recording")
        self.action.setEnabled(True)
        self.show()

    def show(self) -> SummaryDialog | None:
        if self.summary is None:
            return None
        if self.dialog is None:
            self.dialog = SummaryDialog(self.window)
            self.dialog.fit_screen(self.window.screen().availableGeometry())
        self.dialog.set_summary(self.summary, self.png, self.run_dir)
        self.dialog.show()  # not modal: the window, and the next run, go on
        self.dialog.raise_()
        return self.dialog
