"""The built-in feedback display (PySide6): a thermometer or bar, a fixation cross and text.

The one Qt module outside ``rtcontrol/gui``. It is a consumer like any stimulus program: it gets the
agent's items (``run_start``, ``feedback``, ``message``, ``run_stop``) through a coalescing queue (a
display that fell behind shows the newest value, never a backlog) and reports ``displayed`` after the
frame with the new value was painted.

A feedback value is a number, or an object with a numeric ``value`` and optional ``text``. Colours and
the scale (``low``..``high`` maps to an empty..full thermometer) come from the run's display settings.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QGuiApplication, QPainter, QPen
from PySide6.QtWidgets import QApplication, QWidget

from rtcontrol.subject import protocol as P
from rtcontrol.subject.agent import SubjectAgent
from rtcontrol.subject.consumers import Consumer


class FeedbackView(QWidget):
    """Draws the current state; :meth:`apply` takes one agent item."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("rtcontrol subject display")
        self.settings = P.Display()
        self.run: str | None = None
        self.value: float | None = None
        self.feedback_text = ""
        self.message = ""
        self.message_kind = ""
        self.show_feedback = True
        self.pending: tuple[str, int] | None = None  # feedback applied but not yet painted
        self.painted: tuple[str, int] | None = None
        self.on_displayed: Callable[[str, int, float], None] | None = None
        self.setAutoFillBackground(False)
        self.setCursor(Qt.CursorShape.BlankCursor)

    # ------------------------------------------------------------------ state

    def apply(self, item: dict[str, Any]) -> None:
        kind = item.get("type")
        if kind == "run_start":
            d = item.get("display") or {}
            self.settings = P.Display(**{k: v for k, v in d.items() if k in P.Display().__dict__})
            self.run = item.get("run")
            self.value = None
            self.feedback_text = ""
            self.message = self.settings.text
            self.message_kind = ""
            self.show_feedback = self.settings.kind != "none"
        elif kind == "run_stop":
            self.show_feedback = False
            self.value = None
        elif kind == "message":
            self.message = str(item.get("text") or "")
            self.message_kind = str(item.get("kind") or "")
            if self.message_kind == "run_over":
                self.show_feedback = False
            elif self.message_kind != "rest":
                self.show_feedback = self.settings.kind != "none"
        elif kind == "feedback":
            value = item.get("value")
            text = ""
            if isinstance(value, dict):
                text = str(value.get("text", ""))
                value = value.get("value")
            self.value = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            self.feedback_text = text
            if self.message_kind in ("rest", "run_over"):
                self.message, self.message_kind = "", ""
            self.show_feedback = self.settings.kind != "none"
            self.pending = (item["run"], item["index"])
        self.update()

    @property
    def fraction(self) -> float | None:
        """The value on the run's scale, clipped to 0..1 (None when there is no value)."""
        if self.value is None:
            return None
        s = self.settings
        return min(1.0, max(0.0, (self.value - s.low) / (s.high - s.low)))

    # ------------------------------------------------------------------ painting

    def paintEvent(self, event: Any) -> None:
        s = self.settings
        w, h = self.width(), self.height()
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor(s.background))
        fg = QColor(s.foreground)
        if s.fixation:
            arm = max(8.0, min(w, h) * 0.03)
            p.setPen(QPen(fg, max(2.0, arm / 5)))
            p.drawLine(int(w / 2 - arm), int(h / 2), int(w / 2 + arm), int(h / 2))
            p.drawLine(int(w / 2), int(h / 2 - arm), int(w / 2), int(h / 2 + arm))
        if self.show_feedback and s.kind in ("thermometer", "bar"):
            self._draw_gauge(p, w, h, fg)
        text = self.message or (self.feedback_text if self.show_feedback else "")
        if self.show_feedback and s.kind == "text" and self.value is not None and not text:
            text = f"{self.value:g}"
        if text:
            font = QFont()
            font.setPixelSize(max(12, int(h * 0.06)))
            p.setFont(font)
            p.setPen(fg)
            p.drawText(QRectF(0, h * 0.05, w, h * 0.2), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, text)
        p.end()
        if self.pending is not None:
            self.painted, self.pending = self.pending, None
            if self.on_displayed is not None:
                self.on_displayed(self.painted[0], self.painted[1], time.monotonic())

    def _draw_gauge(self, p: QPainter, w: int, h: int, fg: QColor) -> None:
        s = self.settings
        frac = self.fraction or 0.0
        pen = QPen(fg, max(2.0, min(w, h) * 0.006))
        if s.kind == "thermometer":
            gw, gh = max(20.0, w * 0.07), h * 0.6
            outer = QRectF(w * 0.75 - gw / 2, (h - gh) / 2, gw, gh)
            inner = QRectF(outer.left() + 4, outer.bottom() - 4 - (gh - 8) * frac, gw - 8, (gh - 8) * frac)
        else:
            gw, gh = w * 0.6, max(16.0, h * 0.06)
            outer = QRectF((w - gw) / 2, h * 0.75 - gh / 2, gw, gh)
            inner = QRectF(outer.left() + 4, outer.top() + 4, (gw - 8) * frac, gh - 8)
        if frac > 0:
            p.fillRect(inner, QColor(s.fill))
        p.setPen(pen)
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(outer)


class DisplayConsumer(Consumer):
    """Feeds a :class:`FeedbackView` from the agent's hub; the newest feedback wins."""

    kind = "display"

    def __init__(self, view: FeedbackView, agent: SubjectAgent) -> None:
        super().__init__("display", maxsize=64, coalesce=True)
        self.view = view
        view.on_displayed = lambda run, index, t: agent.handle_consumer(
            self, {"type": "displayed", "run": run, "index": index})

    async def deliver(self, item: dict[str, Any]) -> None:
        self.view.apply(item)


def place(view: QWidget, screen: int | None, windowed: bool) -> None:
    """Show on screen ``screen`` (default: the last one, usually the projector), full screen unless windowed."""
    screens = QGuiApplication.screens()
    if screen is not None and not 0 <= screen < len(screens):
        raise ValueError(f"--screen {screen}: this PC has {len(screens)} screen(s), numbered 0..{len(screens) - 1}")
    target = screens[-1 if screen is None else screen]
    geo = target.geometry()
    if windowed:
        view.resize(min(800, geo.width()), min(600, geo.height()))
        view.move(geo.left() + 40, geo.top() + 40)
        view.show()
    else:
        view.setGeometry(geo)
        view.showFullScreen()


class _Window(FeedbackView):
    def __init__(self, agent: SubjectAgent) -> None:
        super().__init__()
        self.consumer = DisplayConsumer(self, agent)
        self._agent = agent
        self.closed = asyncio.Event()

    def closeEvent(self, event: Any) -> None:
        self._agent.hub.remove(self.consumer)
        self.closed.set()
        super().closeEvent(event)

    def keyPressEvent(self, event: Any) -> None:
        if event.key() == Qt.Key.Key_Escape and event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.close()  # Shift+Esc: a deliberate key, so a subject's button box cannot close it
        else:
            super().keyPressEvent(event)


def attach_display(agent: SubjectAgent, screen: int | None = None, windowed: bool = False) -> _Window:
    """Open the display and join the agent's consumers (call with a running qasync loop)."""
    window = _Window(agent)
    initial = [{"type": "run_start", **agent.current.to_consumer()}] if agent.current else []
    agent.hub.add(window.consumer, initial)
    place(window, screen, windowed)
    return window


def run_with_display(args: argparse.Namespace,
                     serve: Callable[..., Awaitable[int]]) -> int:
    """Run ``serve(args, on_ready=...)`` on a Qt event loop (qasync) with the display open."""
    import signal

    import qasync

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl+C ends at once even while Qt holds the thread
    app = QApplication.instance() or QApplication(sys.argv[:1])
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)

    async def main() -> int:
        windows: list[_Window] = []
        task = asyncio.ensure_future(
            serve(args, on_ready=lambda agent: windows.append(attach_display(agent, args.screen, args.windowed))))
        while not windows and not task.done():
            await asyncio.sleep(0.05)
        if windows:
            closed = asyncio.ensure_future(windows[0].closed.wait())
            await asyncio.wait({task, closed}, return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        try:
            return await task
        except asyncio.CancelledError:
            return 0

    with loop:
        return loop.run_until_complete(main())
