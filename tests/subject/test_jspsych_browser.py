"""The jsPsych page in a real headless chromium: feedback pushed over the local websocket, keys sent back.

Runs twice: with the page's built-in runner (always) and with the real jsPsych 8 when it is installed
under resources/jspsych/vendor (``npm install --prefix resources/jspsych/vendor jspsych@8``).
"""

from __future__ import annotations

import json
import time

import pytest

from rtcontrol.subject.embedded import local_subject_agent
from rtcontrol.subject.link import SubjectClient
from rtcontrol.subject.vendor import install_jspsych
from tests.support.cdp import Browser, chromium_path
from tests.support.subject import Recorder
from tests.support.wait import wait_until

pytestmark = pytest.mark.skipif(chromium_path() is None,
                                reason="chromium is not installed (apt-get install chromium; it is in .ci/run)")


@pytest.fixture(scope="session")
def real_jspsych() -> None:
    """Install jsPsych with npm if it is missing (as ``main.py --subject --install-jspsych`` does)."""
    try:
        install_jspsych(timeout=240)
    except RuntimeError as exc:
        pytest.skip(f"real jsPsych unavailable, only the built-in runner is tested: {exc}")


@pytest.mark.parametrize("runner", ["builtin", "jspsych"])
async def test_page_receives_pushed_feedback_and_sends_keys_back(runner, tmp_path, request) -> None:
    if runner == "jspsych":
        request.getfixturevalue("real_jspsych")
    async with local_subject_agent() as info:
        rec = Recorder()
        client = SubjectClient(info.url, token=info.token, expected_fingerprint=info.fingerprint, **rec.kw())
        await client.connect()
        browser = Browser(tmp_path / "profile")
        try:
            query = "&runner=builtin" if runner == "builtin" else ""
            await browser.open(info.page_url + query)
            await browser.wait_for("document.body.dataset.connected === '1'", timeout=30)
            assert await browser.eval("document.body.dataset.engine") == runner
            await wait_until(lambda: any(c["kind"] == "ws" for c in rec.states[-1].get("consumers", [])),
                             what="the page to join as a consumer")
            await client.start_run({"run": "run-07", "display": {"fill": "#ff0000", "low": 0, "high": 2}})
            for i, value in enumerate([0.5, 1.5]):
                client.send_feedback("run-07", i, value, acquired=time.monotonic())
                await browser.wait_for(f"document.getElementById('rtc-thermo').dataset.index === '{i}'")
            thermo = await browser.eval(
                "(() => { const t = document.getElementById('rtc-thermo');"
                " return [t.dataset.value, document.getElementById('rtc-fill').style.height,"
                " getComputedStyle(document.getElementById('rtc-fill')).backgroundColor]; })()")
            assert thermo == ["1.5", "75%", "rgb(255, 0, 0)"]  # 1.5 on a 0..2 scale, run colour
            await wait_until(lambda: "displayed" in rec.deliveries.get(("run-07", 1), {}), what="displayed stamp")
            stamps = rec.deliveries[("run-07", 1)]
            assert stamps["subject_delivered"] <= stamps["consumer_taken"] <= stamps["displayed"] <= time.monotonic()
            await browser.press("2")
            await wait_until(lambda: rec.responses, what="the key press to reach the console")
            assert rec.responses[0]["data"]["key"] == "2" and rec.responses[0]["data"]["volume"] == 1
            assert rec.responses[0]["run"] == "run-07"
            client.send_message("Run over", kind="run_over")
            await browser.wait_for("document.body.dataset.state === 'finished'")
            log = await browser.eval("[...document.querySelectorAll('#rtc-log li')].map(li => li.textContent)")
            received = [json.loads(x) for x in log]
            assert [(m["index"], m["value"]) for m in received if "index" in m] == [(0, 0.5), (1, 1.5)]
        finally:
            await browser.close()
            await client.close()


@pytest.mark.parametrize("query", ["?runner=builtin", "?runner=builtin&secret=wrong"],
                         ids=["no-secret", "wrong-secret"])
async def test_the_page_without_the_secret_is_refused_and_says_why(query, tmp_path) -> None:
    async with local_subject_agent() as info:
        browser = Browser(tmp_path / "profile")
        try:
            await browser.open(f"http://127.0.0.1:{info.local_port}/{query}")
            await browser.wait_for("document.body.dataset.refused !== undefined", timeout=30)
            assert "secret" in await browser.eval("document.body.dataset.refused")
            assert info.agent.state()["consumers"] == []  # it never joined
        finally:
            await browser.close()
