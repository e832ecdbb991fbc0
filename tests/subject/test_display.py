"""The built-in display (offscreen Qt): state from agent items, the picture, and the ``displayed`` stamp."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no screen needed (make test sets it too)

pytest.importorskip("PySide6")

from PySide6.QtGui import QColor
from PySide6.QtWidgets import QApplication

from rtcontrol.subject.agent import SubjectAgent
from rtcontrol.subject.display import DisplayConsumer, FeedbackView

pytestmark = pytest.mark.gui

RUN = {"type": "run_start", "run": "run-01", "onset": {"mode": "immediate", "tr": None, "delay": 0.0},
       "display": {"kind": "thermometer", "background": "#101010", "foreground": "#ffffff", "fill": "#ff0000",
                   "low": 0.0, "high": 2.0, "fixation": True, "text": ""}, "extra": {}}


def test_view_follows_items_and_paints_the_thermometer(qtbot, tmp_path) -> None:
    view = FeedbackView()
    qtbot.addWidget(view)
    view.resize(400, 300)
    view.show()
    shown = []
    view.on_displayed = lambda run, index, t: shown.append((run, index))
    view.apply(RUN)
    view.apply({"type": "feedback", "run": "run-01", "index": 3, "value": 1.5, "late": False})
    qtbot.waitUntil(lambda: shown == [("run-01", 3)], timeout=3000)
    assert view.fraction == pytest.approx(0.75)
    img = view.grab().toImage()
    img.save(str(tmp_path / "thermometer.png"))
    w, h = img.width(), img.height()
    # thermometer at 75 % of the width: filled red near its bottom, background above the fill line
    assert QColor(img.pixel(int(w * 0.75), int(h * 0.75))).name() == "#ff0000"
    assert QColor(img.pixel(int(w * 0.75), int(h * 0.25))).name() == "#101010"
    assert QColor(img.pixel(5, 5)).name() == "#101010"
    assert QColor(img.pixel(w // 2, h // 2)).name() == "#ffffff"  # fixation cross

    view.apply({"type": "message", "kind": "rest", "text": "Rest"})
    view.apply({"type": "feedback", "run": "run-01", "index": 4, "value": {"value": 5.0, "text": "great"}})
    assert view.fraction == 1.0 and view.feedback_text == "great" and view.message == ""  # rest cleared
    view.apply({"type": "message", "kind": "run_over", "text": "Run over"})
    assert view.show_feedback is False and view.message == "Run over"


async def test_display_consumer_reports_displayed_to_the_agent(qtbot) -> None:
    agent = SubjectAgent()
    view = FeedbackView()
    qtbot.addWidget(view)
    view.resize(320, 240)
    view.show()
    consumer = DisplayConsumer(view, agent)
    agent.hub.add(consumer)
    agent.handle_console({"type": "run_start", "run": "r", "settings": {}})
    before = time.monotonic()
    agent.handle_console({"type": "feedback", "run": "r", "index": 0, "value": 0.5})
    deadline = time.monotonic() + 3
    while view.painted != ("r", 0) and time.monotonic() < deadline:
        QApplication.processEvents()
        await asyncio.sleep(0.01)
    assert view.painted == ("r", 0)
    rec = agent.record("r", 0)
    assert before <= rec.consumers["display"]["taken"] <= rec.consumers["display"]["displayed"]
    reports = []
    while len(agent.outbox):
        reports.append(await agent.outbox.get())
    last = [m for m in reports if m["type"] == "delivery"][-1]
    assert "displayed" in last["stamps"] and last["stamps"]["consumers"]["display"]["displayed"] >= before
    # the open built-in display is a consumer: what it took counts as delivered
    assert last["stamps"]["outcome"] == "delivered" and last["stamps"]["taken_by"] == ["display"]
    await agent.close()


async def test_display_coalesces_to_the_newest_value() -> None:
    agent = SubjectAgent()
    consumer = DisplayConsumer.__new__(DisplayConsumer)  # queue behaviour only, no widget needed
    from rtcontrol.subject.consumers import Consumer

    Consumer.__init__(consumer, "display", maxsize=64, coalesce=True)
    for i in range(10):
        consumer.queue.put({"type": "feedback", "run": "r", "index": i, "value": i})
    consumer.queue.put({"type": "message", "kind": "rest", "text": "Rest"})
    items = [await consumer.queue.get() for _ in range(len(consumer.queue))]
    assert [i.get("index") for i in items] == [9, None] and consumer.queue.coalesced == 9
    await agent.close()


async def test_subject_mode_with_display_stamps_displayed(tmp_path) -> None:
    """``main.py --subject --display`` (qasync loop, offscreen): a value is painted and stamped."""
    import sys

    from rtcontrol.link.tokens import TokenStore
    from rtcontrol.subject.link import SubjectClient
    from tests.support.subject import MAIN, Recorder, _read_banner
    from tests.support.wait import wait_until

    store = tmp_path / "tokens.json"
    token = TokenStore(store).create("console")
    env = {**os.environ, "RTCONTROL_HOME": str(tmp_path / "home"), "QT_QPA_PLATFORM": "offscreen"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(MAIN), "--subject", "--display", "--windowed", "--host", "127.0.0.1", "--port", "0",
        "--tcp-port", "0", "--local-port", "0", "--tokens", str(store), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        banner = await _read_banner(proc)
        rec = Recorder()
        client = SubjectClient(banner["url"], token=token, expected_fingerprint=banner["fingerprint"], **rec.kw())
        await client.connect()
        await wait_until(lambda: any(c["kind"] == "display" for c in client.agent_state.get("consumers", [])),
                         timeout=20, what="the display to join")
        await client.start_run({"run": "d", "display": {"kind": "bar"}})
        client.send_feedback("d", 0, 0.5)
        await wait_until(lambda: "displayed" in rec.deliveries.get(("d", 0), {}), timeout=10, what="displayed")
        stamps = rec.deliveries[("d", 0)]
        assert stamps["consumers"]["display"]["displayed"] >= stamps["subject_delivered"]
        await client.close()
    finally:
        proc.terminate()
        rc = await asyncio.wait_for(proc.wait(), 20)
        err = (await proc.stderr.read()).decode()
    assert "Traceback" not in err, err
    assert rc in (0, -15), err
