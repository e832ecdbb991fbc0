"""The base of every dock panel: take controller events cheaply, repaint on the window's timer."""

from __future__ import annotations

from typing import Any

from PySide6 import QtCore, QtGui, QtWidgets


class Panel(QtWidgets.QWidget):
    """``on_event`` only records what changed (cheap); ``refresh`` repaints when ``dirty``."""

    title = "Panel"
    icon_name = ""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.dirty = False

    def on_event(self, event: Any) -> None:  # pragma: no cover - overridden
        pass

    def refresh(self) -> None:
        """Repaint now if something changed since the last call."""
        if self.dirty:
            self.dirty = False
            self.repaint_now()

    def repaint_now(self) -> None:  # pragma: no cover - overridden
        pass


def caption(text: str) -> QtWidgets.QLabel:
    label = QtWidgets.QLabel(text)
    label.setObjectName("caption")
    return label


def set_role(label: QtWidgets.QLabel, role: str) -> None:
    """Restyle a label by object name ("ok", "warn", "error", "big", ...)."""
    if label.objectName() != role:
        label.setObjectName(role)
        label.style().unpolish(label)
        label.style().polish(label)


class ElidedLabel(QtWidgets.QLabel):
    """One line shortened in the middle to the width it is given (a path that would wrap and be cut in a
    short panel); the whole text on hover."""

    def __init__(self, text: str = "", parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        self.setToolTip(text)

    def setText(self, text: str) -> None:  # Qt name
        super().setText(text)
        self.setToolTip(text)

    def minimumSizeHint(self) -> QtCore.QSize:
        return QtCore.QSize(40, super().minimumSizeHint().height())

    def shown_text(self) -> str:
        """What is drawn: the text, shortened in the middle to the label's width."""
        # a few pixels spare: drawn glyphs can be a little wider than the metrics say
        room = self.contentsRect().width() - 4
        return self.fontMetrics().elidedText(self.text(), QtCore.Qt.TextElideMode.ElideMiddle, room)

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:  # Qt name
        painter = QtGui.QPainter(self)
        painter.setPen(self.palette().color(self.foregroundRole()))
        painter.drawText(self.contentsRect(), int(self.alignment()), self.shown_text())
