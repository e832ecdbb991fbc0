"""FeedbackClient (synchronous, for PsychoPy scripts) against a real agent on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time

import pytest

from rtcontrol.subject import FeedbackClient
from tests.support.wait import wait_until


async def test_latest_wait_for_and_responses(agent_info, client) -> None:
    fb = await asyncio.to_thread(FeedbackClient, agent_info.local_port)
    try:
        assert fb.latest() is None
        await asyncio.sleep(0.1)
        assert fb.name and fb.name.startswith("python-")  # named by its hello
        await wait_until(lambda: any(c["kind"] == "ws" for c in agent_info.agent.state()["consumers"]),
                         what="the client to join")
        await client.start_run({"run": "run-03", "tr": 1.0})
        waiter = asyncio.create_task(asyncio.to_thread(fb.wait_for, 2, 5.0))
        for i in range(3):
            client.send_feedback("run-03", i, {"value": i / 4, "text": f"v{i}"})
        got = await waiter
        assert (got.run, got.index, got.value, got.late) == ("run-03", 2, {"value": 0.5, "text": "v2"}, False)
        assert fb.latest().index == 2
        assert fb.run["run"] == "run-03"
        with pytest.raises(TimeoutError, match="volume 99"):
            await asyncio.to_thread(fb.wait_for, 99, 0.2)
        fb.send_response(rating=4, rt=1.25)
        fb.displayed(2)
        rec = client.recorder
        await wait_until(lambda: rec.responses, what="the rating")
        assert rec.responses[0]["data"] == {"rating": 4, "rt": 1.25} and rec.responses[0]["run"] == "run-03"
        await wait_until(lambda: "displayed" in rec.deliveries.get(("run-03", 2), {}), what="displayed stamp")
        client.send_message("Rest", kind="rest")
        await wait_until(lambda: any(m.get("kind") == "rest" for m in fb.messages()), what="the message")
        fb._send({"type": "explode"})
        await wait_until(lambda: fb.errors(), what="the agent's error")
    finally:
        await asyncio.to_thread(fb.close)


def test_no_agent_gives_a_clear_error() -> None:
    t = time.monotonic()
    with pytest.raises(ConnectionError, match="python main.py --subject"):
        FeedbackClient(port=9, connect_timeout=0.5)
    assert time.monotonic() - t < 3
