"""Log: everything the operator should know, in plain words, with errors highlighted."""

from __future__ import annotations

import html
import time
from typing import Any

from PySide6 import QtCore, QtWidgets

from rtcontrol.console import events as ev
from rtcontrol.gui.panel import Panel

COLOURS = {"info": "#c9d1dc", "warning": "#f0b54a", "error": "#ff6b6b"}
MAX_LINES = 5000


class LogPanel(Panel):
    title = "Log"
    icon_name = "log"

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.text = QtWidgets.QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(MAX_LINES)
        self.pending: list[ev.LogMessage] = []
        self.errors = 0
        self.lines: list[str] = []  # plain copies of the last lines (tests, copy to clipboard)
        # follow new lines until the operator scrolls up (and again once they scroll back to the end); a
        # resize or a wrapped line changes the range, which must not end the following
        self.following = True
        bar = self.text.verticalScrollBar()
        bar.actionTriggered.connect(lambda _action: QtCore.QTimer.singleShot(0, self, self._user_scrolled))
        bar.rangeChanged.connect(lambda _lo, hi: bar.setValue(hi) if self.following else None)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.text)

    def _user_scrolled(self) -> None:
        bar = self.text.verticalScrollBar()
        self.following = bar.value() >= bar.maximum() - 2

    def sizeHint(self) -> QtCore.QSize:  # a short strip under the views, not half the window
        return QtCore.QSize(600, 170)

    def on_event(self, event: Any) -> None:
        if isinstance(event, ev.LogMessage):
            self.pending.append(event)
            self.dirty = True

    def repaint_now(self) -> None:
        pending, self.pending = self.pending, []
        for m in pending:
            stamp = time.strftime("%H:%M:%S", time.localtime(m.time))
            level = m.level if m.level in COLOURS else "info"
            if level == "error":
                self.errors += 1
            weight = "bold" if level == "error" else "normal"
            self.text.appendHtml(
                f'<span style="color:#6b7586">{stamp}</span> '
                f'<span style="color:#8fa2ba">{html.escape(m.source)}</span> '
                f'<span style="color:{COLOURS[level]};font-weight:{weight}">{html.escape(m.text)}</span>'
            )
            self.lines.append(f"{stamp} {m.source} {m.level}: {m.text}")
        del self.lines[:-MAX_LINES]
        if self.following:
            bar = self.text.verticalScrollBar()
            bar.setValue(bar.maximum())
