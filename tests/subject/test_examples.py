"""The PsychoPy example runs (text mode, without PsychoPy) against a real agent; the MATLAB snippet is complete."""

from __future__ import annotations

import asyncio
import sys

from rtcontrol.paths import resources_dir
from tests.support.wait import wait_until

EXAMPLE = resources_dir() / "psychopy" / "feedback_thermometer.py"


async def test_psychopy_example_in_text_mode(agent_info, client) -> None:
    # PsychoPy is blocked: the example must import and run its text mode without it
    code = ("import sys, runpy; sys.modules['psychopy'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, str(EXAMPLE), "--port", str(agent_info.local_port), "--text",
        "--volumes", "3", "--timeout", "10", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    await wait_until(lambda: any(c["kind"] == "ws" for c in agent_info.agent.state()["consumers"]), timeout=20,
                     what="the example to connect")
    await client.start_run({"run": "ex", "display": {"low": 0, "high": 10}})
    for i, v in enumerate([2.5, 5, 10]):
        client.send_feedback("ex", i, v)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert out.decode().splitlines() == ["volume 0: value 2.5 -> 25%", "volume 1: value 5 -> 50%",
                                         "volume 2: value 10 -> 100%"]
    rec = client.recorder
    await wait_until(lambda: rec.responses, what="the example's response")
    assert rec.responses[-1]["data"] == {"done": True, "volumes": 3}
    await wait_until(lambda: "displayed" in rec.deliveries.get(("ex", 2), {}), what="displayed stamps")
    assert any(name.startswith("psychopy-") for name in rec.deliveries[("ex", 2)]["consumers"])


def test_matlab_snippet_covers_the_protocol() -> None:
    text = (resources_dir() / "matlab" / "rtcontrol_feedback.m").read_text()
    for needle in ('tcpclient("127.0.0.1", 8742', 'configureTerminator(t, "LF")', 'case "feedback"',
                   '"type", "response"', '"type", "displayed"', "jsondecode(readline(t))",
                   '"type", "hello", "name", "matlab", "secret", secret', '"consumer.secret"'):
        assert needle in text
