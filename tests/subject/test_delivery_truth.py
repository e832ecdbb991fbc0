"""Delivered means a stimulus program took the value: per-run-session deduplication, and the agent's word
on each value (``outcome``) decides what the console counts and reports."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest

from rtcontrol.console import settings as S
from rtcontrol.console.headless import run_session
from rtcontrol.console.session import ConsoleSession
from rtcontrol.link.pinning import KnownHosts
from rtcontrol.subject.secret import read_secret
from tests.support.subject import LineConsumer, agent_process
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(180)

VOLUMES = 10
BASELINE = 2  # the template project gives no feedback for its baseline volumes
VALUES = VOLUMES - BASELINE


async def _headless_run(agent: dict[str, Any], runs_dir: Path, known_hosts: Path) -> tuple[int, str]:
    """``main.py run --no-gui`` as a script runs it: the demo scan, an in-process worker, the real agent."""
    s = S.default_settings().with_values("run", tr=0.2)
    s = s.with_values("project", name="template", settings={"baseline": BASELINE})
    s = s.with_values("subject", url=agent["url"], token=agent["token"])
    session = ConsoleSession(s, demo=True, demo_volumes=VOLUMES, runs_dir=runs_dir, known_hosts=known_hosts,
                             worker_options={"in_process": True})
    out = io.StringIO()
    status = await run_session(session, out=out)
    return status, out.getvalue()


async def _read_values(consumer: LineConsumer, got: list[tuple[str, int]]) -> None:
    while True:
        msg = await consumer.next(timeout=60)
        if msg["type"] == "feedback":
            got.append((msg["run"], msg["index"]))


async def test_the_same_run_twice_against_one_agent_reaches_the_stimulus_program_both_times(tmp_path: Path) -> None:
    """The failure found: a second run with the same run id (same settings, another runs folder) against one
    long-running agent got no feedback at its stimulus program, yet the console said all were delivered."""
    async with agent_process(tmp_path / "presentation-pc") as agent:
        known_hosts = tmp_path / "known_hosts"  # pinned in advance, as a site compares fingerprints once
        KnownHosts(known_hosts).add(agent["url"].removeprefix("wss://"), agent["fingerprint"])
        consumer = await LineConsumer.open(agent["tcp"], secret=read_secret(agent["secret_file"]), name="stim")
        got: list[tuple[str, int]] = []
        reader = asyncio.create_task(_read_values(consumer, got))
        try:
            summaries = []
            for n in (1, 2):
                status, text = await _headless_run(agent, tmp_path / f"runs-{n}", known_hosts)
                assert status == 0, text
                summaries.append(text)
                await wait_until(lambda n=n: len(got) == n * VALUES, timeout=10,
                                 what=f"run {n}'s values at the stimulus program (got {got})")
        finally:
            reader.cancel()
            consumer.close()
    run = "sub-01_ses-01_task-feedback_run-01"
    expected = [(run, i) for i in range(BASELINE, VOLUMES)]
    assert got == expected + expected  # each run's values, in order, once each
    for text in summaries:
        assert f"{VOLUMES} volumes, {VOLUMES} feedback values, {VALUES} delivered to a stimulus program" in text
        assert f"feedback: {VALUES} of {VALUES} feedback values reached a stimulus program" in text


async def test_no_stimulus_program_means_not_delivered_and_a_scripted_run_says_what_was_lost(tmp_path: Path) -> None:
    """A real agent with nothing connected: the ack is not delivery; the summary names every volume and a
    run against an agent given by address exits 1."""
    async with agent_process(tmp_path / "presentation-pc") as agent:
        known_hosts = tmp_path / "known_hosts"
        KnownHosts(known_hosts).add(agent["url"].removeprefix("wss://"), agent["fingerprint"])
        status, text = await _headless_run(agent, tmp_path / "runs", known_hosts)
    assert f"{VOLUMES} feedback values, 0 delivered to a stimulus program" in text, text
    assert (f"feedback: 0 of {VALUES} feedback values reached a stimulus program; {VALUES} reached the subject "
            f"agent with no stimulus program connected (volumes {BASELINE}-{VOLUMES - 1})") in text
    assert text.count("feedback NOT shown: no stimulus program connected") == VALUES
    assert status == 1, text


async def test_run_start_begins_a_new_session_and_resends_within_it_are_dropped(agent_info, client) -> None:
    c = await LineConsumer.open(agent_info.tcp_port)
    rec = client.recorder
    for attempt in range(2):  # the same run name twice: each start is a new session
        await client.start_run({"run": "same"})
        client.send_feedback("same", 0, 0.5)
        msg = await c.next_of("feedback")
        assert (msg["run"], msg["index"]) == ("same", 0), attempt
        await wait_until(lambda: rec.deliveries.get(("same", 0), {}).get("outcome") == "delivered",
                         what="the value taken")
        rec.deliveries.clear()
        # a resend within the session (a reconnect resends what was not acknowledged, marked late)
        client._send_now({"type": "feedback", "run": "same", "index": 0, "value": 0.5, "late": True})
        await wait_until(lambda: ("same", 0) in rec.deliveries, what="the duplicate's ack")
        assert rec.deliveries[("same", 0)]["outcome"] == "delivered"  # the session's own record, not new
        client.send_feedback("same", 1, 0.6)
        assert (await c.next_of("feedback"))["index"] == 1  # 0 did not come twice
        await client.stop_run("same")
        await c.next_of("run_stop")
        rec.deliveries.clear()


async def test_a_value_no_consumer_took_is_reported_as_such(agent_info, client) -> None:
    rec = client.recorder
    await client.start_run({"run": "r"})
    client.send_feedback("r", 0, 0.1)  # nothing connected
    await wait_until(lambda: ("r", 0) in rec.deliveries, what="ack")
    stamps = rec.deliveries[("r", 0)]
    assert stamps["outcome"] == "no_consumer" and stamps["taken_by"] == [] and "consumer_taken" not in stamps

    # queued for a consumer that leaves without reading: dropped, never delivered
    stuck = await LineConsumer.open(agent_info.tcp_port, name="stuck")
    stuck.writer.transport.pause_reading()  # it never reads: its socket buffers fill up
    big = "x" * 12_000
    n = 1000  # ~12 MB: more than the loopback socket buffers and the consumer's 256-item queue hold
    for i in range(1, n + 1):
        client.send_feedback("r", i, {"value": i, "pad": big})
        await asyncio.sleep(0.001)
    await wait_until(lambda: not client.unacked, timeout=20, what="every ack")
    stuck.writer.transport.abort()
    await wait_until(lambda: all(rec.deliveries[("r", i)]["outcome"] in ("delivered", "dropped")
                                 for i in range(1, n + 1)), timeout=10, what="every value's final word")
    dropped = [i for i in range(1, n + 1) if rec.deliveries[("r", i)]["outcome"] == "dropped"]
    assert dropped, "the stuck consumer's queue should have held values it never took"
    assert all("consumer_taken" not in rec.deliveries[("r", i)] for i in dropped)
    assert all(rec.deliveries[("r", i)]["dropped"] for i in dropped)  # which consumer, and why


async def test_run_stop_answers_after_queued_values_are_taken(agent_info, client) -> None:
    """The console's summary follows run_stopped: by then every value has its final word."""
    c = await LineConsumer.open(agent_info.tcp_port, name="reader")
    rec = client.recorder
    await client.start_run({"run": "r"})
    reading = asyncio.create_task(_read_values(c, []))
    try:
        for i in range(50):
            client.send_feedback("r", i, {"value": i, "pad": "y" * 8000})
        await client.stop_run("r")
        assert all(rec.deliveries.get(("r", i), {}).get("outcome") == "delivered" for i in range(50)), \
            {i: rec.deliveries.get(("r", i), {}).get("outcome") for i in range(50)}
    finally:
        reading.cancel()
