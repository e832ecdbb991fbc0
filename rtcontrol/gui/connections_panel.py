"""Connections: worker, subject agent and AFNI; address, state, round-trip time, certificate fingerprint."""

from __future__ import annotations

from typing import Any

from PySide6 import QtCore, QtGui, QtWidgets

from rtcontrol.console import events as ev
from rtcontrol.gui.panel import Panel

LINKS = ("worker", "subject", "afni")
COLUMNS = ("link", "address", "state", "RTT", "fingerprint")
STATE_COLOURS = {"connected": "#5fd3a0", "connecting": "#f0b54a", "failed": "#ff6b6b", "closed": "#f0b54a"}


class ConnectionsPanel(Panel):
    title = "Connections"
    icon_name = "link"

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.state: dict[str, ev.ConnectionChanged] = {}
        self.table = QtWidgets.QTableWidget(len(LINKS), len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        # every column always in view: the short ones as wide as their text, address and fingerprint share
        # the rest and are shortened in the middle (the whole text on hover)
        header = self.table.horizontalHeader()
        Mode = QtWidgets.QHeaderView.ResizeMode
        for col, name in enumerate(COLUMNS):
            header.setSectionResizeMode(col, Mode.Stretch if name in ("address", "fingerprint")
                                        else Mode.ResizeToContents)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setVerticalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(QtCore.Qt.TextElideMode.ElideMiddle)
        for row, name in enumerate(LINKS):
            self.table.setItem(row, 0, QtWidgets.QTableWidgetItem(name))
            for col in range(1, len(COLUMNS)):
                self.table.setItem(row, col, QtWidgets.QTableWidgetItem("—"))
        self.detail = QtWidgets.QLabel("")
        self.detail.setWordWrap(True)
        self.detail.setObjectName("caption")
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(2)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.detail)

    def sizeHint(self) -> QtCore.QSize:  # a short strip under the views, not half the window
        return QtCore.QSize(520, 130)

    def minimumSizeHint(self) -> QtCore.QSize:
        """Room for the header and the three rows (the table never scrolls), and a line of detail."""
        rows = self.table.horizontalHeader().sizeHint().height() + len(LINKS) * 22 + 2 * self.table.frameWidth()
        return QtCore.QSize(300, rows + self.detail.fontMetrics().height() + 10)

    def on_event(self, event: Any) -> None:
        if isinstance(event, ev.ConnectionChanged):
            old = self.state.get(event.name)
            if old is not None and event.rtt_ms is None and old.rtt_ms is not None and event.state == old.state:
                event = ev.ConnectionChanged(event.name, event.state, event.url or old.url, event.detail,
                                             event.fingerprint or old.fingerprint, old.rtt_ms)
            self.state[event.name] = event
            self.dirty = True

    def repaint_now(self) -> None:
        details = []
        for name, c in self.state.items():
            if name not in LINKS:
                continue
            row = LINKS.index(name)
            self._cell(row, 1).setText(c.url or "—")
            self._cell(row, 1).setToolTip(c.url)
            item = self._cell(row, 2)
            item.setText(c.state)
            item.setForeground(QtGui.QColor(STATE_COLOURS.get(c.state, "#8a94a3")))
            self._cell(row, 3).setText("—" if c.rtt_ms is None else f"{c.rtt_ms:.1f} ms")
            fp = self._cell(row, 4)
            fp.setText(c.fingerprint or "—")
            fp.setToolTip(c.fingerprint)
            if c.detail:
                details.append(f"{name}: {c.detail}")
        self.detail.setText("\n".join(details))

    def _cell(self, row: int, col: int) -> QtWidgets.QTableWidgetItem:
        item = self.table.item(row, col)
        assert item is not None  # __init__ gives every cell an item
        return item


def ask_trust(parent: QtWidgets.QWidget, peer: str, fingerprint: str) -> QtWidgets.QMessageBox:
    """A non-blocking trust-on-first-use question; see :func:`rtcontrol.gui.main_window.MainWindow.trust_prompt`."""
    box = QtWidgets.QMessageBox(parent)
    box.setIcon(QtWidgets.QMessageBox.Icon.Question)
    box.setWindowTitle("New certificate")
    box.setText(f"First connection to {peer}.\nTrust this certificate?")
    box.setInformativeText(
        f"SHA-256 fingerprint:\n{fingerprint}\n\nCompare it with the one the other machine printed "
        "(main.py certs). Once trusted, a changed certificate is refused."
    )
    box.setStandardButtons(QtWidgets.QMessageBox.StandardButton.Yes | QtWidgets.QMessageBox.StandardButton.No)
    box.setDefaultButton(QtWidgets.QMessageBox.StandardButton.No)
    return box
