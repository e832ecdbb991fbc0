"""The base of every dock panel: take controller events cheaply, repaint on the window's timer."""

from __future__ import annotations

from typing import Any

from PySide6 import QtWidgets


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
