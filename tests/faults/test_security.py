"""Hostile traffic during a real run: bad tokens while the console reconnects, floods of unauthenticated
connections with large frames, and a local program injecting responses without the consumer secret.

Expected (issue 12, items 2, 5 and 6): the console keeps retrying through a lockout and recovers; the
servers' memory stays bounded under the flood and the real console is unaffected; nothing a program
without the secret sends reaches the console or the project.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from . import attacks
from . import scenario as S
from .ledger import assert_balanced
from .procs import peak_rss_mb

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def test_bad_tokens_from_the_same_address_during_a_reconnect_do_not_end_it(rig, series: Path) -> None:
    """Wrong tokens from the console's address while its link is down put the address in an 8 s lockout just
    before the link comes back; the console must wait and retry, and every value still arrives."""
    tr, volumes = 0.3, 60
    setup = await S.start(rig, worker_proxy=True)
    answers: list[str] = []

    async def bad_tokens_while_down(s: S.Setup) -> None:
        await s.stimulus.wait_feedback(5, timeout=30)
        s.worker_proxy.cut(stay_down=True)
        s.note("worker link cut")
        answers.extend(await attacks.bad_tokens(s.worker.url, refusals=7))
        s.worker_proxy.restore()  # the address is locked out now (8 s): the console's next try meets it
        s.note(f"7 bad tokens from 127.0.0.1 straight to the worker (each after the last lockout ran out), then "
               f"the link restored; the last answer: {answers[-1][:120]}")

    try:
        out = await S.run_scenario(setup, series, tr=tr, volumes=volumes, fault=bad_tokens_while_down,
                                   timeout=volumes * tr + 120)
    finally:
        await S.close(setup)
    context = out.context() + "\nanswers to the bad tokens:\n" + "\n".join(answers)
    assert any("refused the token" in a for a in answers), context  # the bad tokens really were refused
    assert_balanced(out.ledger, context)
    assert out.ledger.received == list(range(volumes)), context
    assert out.status == 0, context


@pytest.mark.parametrize("target, connections, frame", [
    ("worker", 40, 12 * 2**20),  # 480 MiB in all, under the worker's 64 MiB frame limit
    ("agent", 150, 2**20 - 4096),  # 150 MiB in all, under the agent's 1 MiB console-link frame limit
])
async def test_a_flood_of_unauthenticated_large_frames_keeps_memory_bounded(rig, series: Path, target: str,
                                                                            connections: int, frame: int) -> None:
    """Many connections at once, each sending one large frame before any hello, mid-run."""
    tr, volumes = 0.3, 24
    setup = await S.start(rig)
    measured: dict[str, float] = {}

    async def flood(s: S.Setup) -> None:
        await s.stimulus.wait_feedback(4, timeout=30)
        proc, url = (s.worker.proc, s.worker.url) if target == "worker" else (s.agent.proc, s.agent.url)
        measured["before"] = peak_rss_mb(proc.pid)
        outcome = await attacks.flood(url, connections, frame)
        measured["after"] = peak_rss_mb(proc.pid)
        s.note(f"flooded the {target} with {connections} x {frame >> 10} KiB frames before hello: {outcome}; "
               f"peak memory {measured['before']:.0f} -> {measured['after']:.0f} MB")

    try:
        out = await S.run_scenario(setup, series, tr=tr, volumes=volumes, fault=flood)
    finally:
        await S.close(setup)
    context = out.context()
    grew = measured["after"] - measured["before"]
    print(f"{target} peak memory grew {grew:.0f} MB under the flood")
    assert grew < 100, f"the {target}'s peak memory grew by {grew:.0f} MB under an unauthenticated flood\n{context}"
    assert_balanced(out.ledger, context)
    assert out.ledger.received == list(range(volumes)), context
    assert out.status == 0, context


def _journal(rig_tmp: Path) -> list[dict]:
    path = rig_tmp / "runs" / S.run_id() / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_a_local_program_without_the_secret_cannot_inject(rig, series: Path) -> None:
    """NDJSON and the page's websocket (with a foreign Origin and with none): responses and 'displayed'
    stamps from a program without the consumer secret never reach the console; the real stimulus
    program's response does."""
    tr, volumes = 0.3, 40
    setup = await S.start(rig)
    answers: dict[str, list[str]] = {}

    async def inject(s: S.Setup) -> None:
        await s.stimulus.wait_feedback(3, timeout=30)
        run = S.run_id()
        forged = [{"type": "response", "key": "INJECTED_{via}"}, {"type": "displayed", "run": run, "index": 3}]

        def msgs(via: str) -> list[dict]:
            return [json.loads(json.dumps(m).replace("{via}", via)) for m in forged]

        s.stimulus.send({"type": "response", "key": "LEGIT"})  # the real program, with the secret
        answers["ndjson"] = await attacks.inject_ndjson(s.agent.tcp_port, msgs("NDJSON"), wait=0.5)
        answers["web page"] = await attacks.inject_websocket(s.agent.local_port, msgs("PAGE"),
                                                             origin="http://evil.example", wait=0.5)
        answers["no origin"] = await attacks.inject_websocket(s.agent.local_port, msgs("LOCAL"), origin=None,
                                                              wait=0.5)
        s.note("injected responses and a 'displayed' stamp for volume 3 without the secret (NDJSON, "
               "websocket from http://evil.example, websocket without Origin); the real program answered LEGIT")

    try:
        out = await S.run_scenario(setup, series, tr=tr, volumes=volumes, fault=inject)
    finally:
        await S.close(setup)
    context = out.context() + "\n" + "\n".join(f"{k}: {v}" for k, v in answers.items())
    journal = _journal(rig.tmp)
    responses = [r for r in journal if r.get("type") == "response"]
    assert any("LEGIT" in json.dumps(r) for r in responses), f"the real program's response was not recorded\n{context}"
    injected = [r for r in responses if "INJECTED" in json.dumps(r)]
    assert not injected, f"responses injected without the secret reached the console: {injected}\n{context}"
    assert "INJECTED" not in out.text, context
    shown = [r for r in journal if r.get("type") == "timeline" and r.get("index") == 3
             and "displayed" in json.dumps(r)]
    assert not shown, f"a 'displayed' stamp injected without the secret was recorded: {shown}\n{context}"
    assert_balanced(out.ledger, context)
    assert out.ledger.received == list(range(volumes)), context


async def test_deeply_nested_json_is_refused_as_a_bad_frame(rig, series: Path) -> None:
    """Issue 12 item 7: 3,000 nested lists (over Python's recursion limit, under any small-frame limit) to
    the worker, the agent's console link and its NDJSON port: a clear refusal, no traceback in the logs, and
    the run beside it goes on."""
    tr, volumes = 0.3, 20
    setup = await S.start(rig)
    answers: dict[str, str] = {}

    async def nest(s: S.Setup) -> None:
        await s.stimulus.wait_feedback(3, timeout=30)
        answers["worker"] = await attacks.deep_json_websocket(s.worker.url, 3000)
        answers["agent"] = await attacks.deep_json_websocket(s.agent.url, 3000)
        answers["ndjson"] = await attacks.deep_json_ndjson(s.agent.tcp_port, 3000, s.agent.secret())
        s.note("3,000 nested JSON lists sent to the worker, the agent's console link and its NDJSON port")

    try:
        out = await S.run_scenario(setup, series, tr=tr, volumes=volumes, fault=nest)
    finally:
        await S.close(setup)
    context = out.context() + "\n" + "\n".join(f"{k}: {v[:300]}" for k, v in answers.items())
    for name, proc in (("worker", setup.worker.proc), ("agent", setup.agent.proc)):
        assert "RecursionError" not in proc.text and "Traceback" not in proc.text, \
            f"the {name} logged a traceback:\n{proc.text[-3000:]}\n{context}"
    for name, answer in answers.items():
        assert "nest" in answer.lower() or "deep" in answer.lower(), \
            f"{name}: the refusal does not say the JSON is nested too deeply: {answer[:300]}\n{context}"
    assert_balanced(out.ledger, context)
    assert out.ledger.received == list(range(volumes)), context
