"""At start-up: runs an earlier session left unfinished (a crash, a power cut), offered to finish.

Finish writes each run's BIDS files from its journal, off the GUI thread (the controller runs
``recover`` in a thread); Later leaves them for the next start or ``python -m rtcontrol.recording``.
"""

from __future__ import annotations

from pathlib import Path

from PySide6 import QtCore, QtWidgets


class InterruptedDialog(QtWidgets.QDialog):
    """Lists each interrupted run's summary; ``finish_requested`` carries the run folders."""

    finish_requested = QtCore.Signal(list)

    def __init__(self, runs: list[tuple[Path, str]], parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("interrupted-runs")
        self.setWindowTitle("Interrupted runs")
        self.runs = [path for path, _ in runs]
        layout = QtWidgets.QVBoxLayout(self)
        intro = QtWidgets.QLabel(
            f"{len(runs)} run(s) did not end normally (the console stopped while recording). Everything up to "
            "the last volume was kept. Finish writes their BIDS files now."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.list = QtWidgets.QListWidget()
        for path, summary in runs:
            item = QtWidgets.QListWidgetItem(summary)
            item.setToolTip(str(path))
            self.list.addItem(item)
        layout.addWidget(self.list)
        buttons = QtWidgets.QDialogButtonBox()
        self.finish_button = buttons.addButton("Finish", QtWidgets.QDialogButtonBox.ButtonRole.AcceptRole)
        self.later_button = buttons.addButton("Later", QtWidgets.QDialogButtonBox.ButtonRole.RejectRole)
        buttons.accepted.connect(self._finish)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(560, 260)

    def _finish(self) -> None:
        self.finish_requested.emit(list(self.runs))
        self.accept()
