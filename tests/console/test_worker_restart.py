"""A worker killed with SIGKILL mid-run and started again: the run resumes on it.

Real parts throughout: the worker is ``main.py --worker`` in its own process (TLS on 127.0.0.1), killed
with SIGKILL and restarted on the same port with the same certificate and token; the console is the
headless controller ``main.py run --no-gui`` uses, replaying a real scanner series; the subject agent is
real, and a stimulus program (``FeedbackClient``) records what reaches it.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from rtcontrol.console import settings as S
from rtcontrol.console.headless import run_session
from rtcontrol.console.session import ConsoleSession
from rtcontrol.link.certs import make_certificate
from rtcontrol.link.tokens import TokenStore
from rtcontrol.paths import app_root
from rtcontrol.subject import FeedbackClient
from rtcontrol.subject.embedded import local_subject_agent
from tests.support.worker import write_project

pytestmark = pytest.mark.timeout(240)

TR = 0.5
SERIES = "siemens_xa30_enhanced_bold_20vol"
VOLUMES = 20
KILL_AFTER = 4  # the worker is killed once the stimulus program has shown feedback for this volume

#: The feedback for volume i is i + 1 only if the project saw every volume before it once, in order:
#: a restarted project whose state was not rebuilt (or saw a volume twice) gives something else.
COUNTING = """
    class Counting(Project):
        def start_run(self, ctx):
            ctx.state["seen"] = []

        def process(self, volume, ctx):
            seen = ctx.state["seen"]
            seen.append(volume.index)
            ctx.send_to_subject(f"volume {volume.index}")
            return Result(feedback=float(len(seen)) if seen == list(range(volume.index + 1)) else -1.0)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WorkerProcess:
    """``main.py --worker`` on a fixed port; its output is kept for the failure message."""

    def __init__(self, port: int, cert, tokens: Path, data: Path, projects: Path) -> None:
        self.cmd = [sys.executable, str(app_root() / "main.py"), "--worker", "--host", "127.0.0.1", "--port", str(port),
                    "--cert", str(cert.cert), "--key", str(cert.key), "--tokens", str(tokens), "--data", str(data),
                    "--projects", str(projects), "--exit-with-parent"]
        self.proc: asyncio.subprocess.Process | None = None
        self.output: list[str] = []
        self._drain: asyncio.Task | None = None

    async def start(self, timeout: float = 60.0) -> float:
        """Start it and wait until it listens; returns that moment (time.monotonic)."""
        self.proc = await asyncio.create_subprocess_exec(
            *self.cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), max(0.1, deadline - time.monotonic()))
            if not line:
                raise AssertionError("the worker exited before it was ready:\n" + "".join(self.output))
            self.output.append(line.decode(errors="replace"))
            if b"WORKER READY" in line:
                ready = time.monotonic()
                self._drain = asyncio.create_task(self._keep_reading())
                return ready

    async def _keep_reading(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.output.append(line.decode(errors="replace"))

    async def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # --exit-with-parent: it stops on its own
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._drain is not None:
            self._drain.cancel()


def shown(fb: FeedbackClient, run: str, n: int) -> dict[int, object]:
    """What the stimulus program received, per volume (``wait_for`` with no wait: only what is there)."""
    got = {}
    for i in range(n):
        try:
            got[i] = fb.wait_for(i, timeout=0.0, run=run)
        except TimeoutError:
            pass
    return got


async def test_a_worker_killed_mid_run_and_restarted_resumes_the_run(tmp_path: Path, dicom_root: Path) -> None:
    cert = make_certificate(["127.0.0.1"], tmp_path / "certs")
    tokens = TokenStore(tmp_path / "tokens.json")
    token = tokens.create("console")
    write_project(tmp_path / "projects", "counting", COUNTING)
    port = free_port()
    worker_data = tmp_path / "worker-runs"
    first = WorkerProcess(port, cert, tokens.path, worker_data, tmp_path / "projects")
    second = WorkerProcess(port, cert, tokens.path, worker_data, tmp_path / "projects")
    await first.start()
    try:
        async with local_subject_agent() as agent:
            (tmp_path / "known_hosts").write_text(
                f"127.0.0.1:{port} {cert.fingerprint}\n{agent.url.removeprefix('wss://')} {agent.fingerprint}\n")
            fb = await asyncio.to_thread(FeedbackClient, agent.local_port)
            try:
                s = S.default_settings().with_values("run", tr=TR)
                s = s.with_values("project", name="counting", settings={})
                s = s.with_values("worker", url=f"wss://127.0.0.1:{port}", token=token)
                s = s.with_values("subject", url=agent.url, token=agent.token)
                session = ConsoleSession(s, demo=True, demo_volumes=VOLUMES, demo_source=dicom_root / SERIES,
                                         runs_dir=tmp_path / "runs", known_hosts=tmp_path / "known_hosts")
                run_id = session.settings.run_id
                out = io.StringIO()
                found: list[float] = []  # when the console found the new worker (before any of its feedback)
                session.controller.events.subscribe(
                    lambda e: found.append(time.monotonic()) if "the worker restarted during" in getattr(e, "text", "")
                    else None)
                headless = asyncio.create_task(run_session(session, out=out))
                await asyncio.to_thread(fb.wait_for, KILL_AFTER, 90.0, run_id)
                t_kill = time.monotonic()
                await first.kill()
                await asyncio.sleep(2 * TR)  # volumes keep arriving while no worker runs
                t_back = await second.start()
                status = await asyncio.wait_for(headless, 150)
                got = shown(fb, run_id, VOLUMES)
                said_to_subject = [int(m["text"].split()[1]) for m in fb.messages()
                                   if str(m.get("text", "")).startswith("volume ")]
            finally:
                await asyncio.to_thread(fb.close)
    finally:
        await first.stop()
        await second.stop()
    text = out.getvalue()
    logs = text + "".join(first.output) + "".join(second.output)

    # the console says exactly what happened, in its log and in the run's summary
    said = re.findall(r"worker restarted at volume (\d+); run restarted there, volumes 0\.\.(\d+) replayed as "
                      r"catch-up \(no feedback shown for (\d+) of them[^)]*\)(?:; volumes? [\d.]+ arrived during "
                      r"the catch-up \(feedback recorded, not shown\))?; live again from volume (\d+)", text)
    assert len(said) == 3 and len(set(said)) == 1, logs  # when it happened, the run's end, the summary
    n, last, dark, m = (int(x) for x in said[0])
    assert last == n - 1 and KILL_AFTER < n <= VOLUMES and m < VOLUMES, logs
    assert status == 0, logs

    # the stimulus program: every value right (the project's state was rebuilt), the live ones before the kill
    # and from volume M on, in order; nothing in between (catch-up never reached it)
    assert all(v.value == i + 1.0 for i, v in got.items()), {i: v.value for i, v in got.items()}
    assert len(found) == 1 and t_kill < found[0] < t_back + 30
    before = sorted(i for i in got if i < m)  # what the lost worker's feedback showed
    assert before == list(range(len(before))) and len(before) > KILL_AFTER, before
    assert all(got[i].received < found[0] for i in before), "a catch-up value reached the stimulus program"
    assert sorted(got) == before + list(range(m, VOLUMES)), (sorted(got), m, logs)
    # no feedback shown for the volumes the lost worker never answered, except the newest replayed one when it goes
    # live again (m == n - 1: nothing newer had arrived, so its feedback is shown)
    assert dark == min(m, n) - len(before), logs
    # the project's messages: those of catch-up volumes were held back, those of live volumes passed on, once
    # (the lost worker may have sent the message of the volume it was killed on, without its feedback)
    tail = list(range(m, VOLUMES))
    assert said_to_subject in (before + tail, before + [len(before)] + tail), said_to_subject
    order = [got[i].received for i in sorted(got)]
    assert order == sorted(order), "feedback reached the stimulus program out of order"

    # the console's record: feedback passed on once per volume, catch-up recorded as such, each once
    records = [json.loads(line) for line in (tmp_path / "runs" / run_id / "journal.jsonl").read_text().splitlines()]
    live = [r["index"] for r in records if r.get("type") == "feedback"]
    caught = [r["data"]["index"] for r in records if r.get("type") == "event" and r.get("kind") == "catch_up_feedback"]
    assert live == sorted(got), (live, sorted(got))
    assert sorted(caught) == sorted(set(caught)) and set(caught) | set(live) == set(range(VOLUMES)), caught
    assert set(caught) >= set(range(len(before), m)), caught  # every volume without live feedback has catch-up
    held = [r["message"] for r in records if r.get("type") == "event" and r.get("kind") == "catch_up_message"]
    assert held == [f"volume {i}" for i in caught], held  # the project's messages of catch-up volumes: kept

    # the end-of-run summary after the resume: live values delivered are what the stimulus program got, the
    # catch-up volumes are named as such, nothing is missing, and the restart is stated
    summary = json.loads((tmp_path / "runs" / run_id / "summary.json").read_text())
    assert summary["received"] == VOLUMES and summary["missing"] == []
    assert summary["outcomes"]["delivered"] == sorted(got) and summary["feedback_values"] == len(live)
    assert summary["catch_up"] == sorted(set(caught) - set(live))  # recomputed only, never shown live
    assert len(summary["restarts"]) == 1 and f"live again from volume {m}" in summary["restarts"][0]

    # the worker: the restarted run is saved apart from the lost worker's partial save, each says which it is,
    # and the new worker processed every volume once, in order
    folders = sorted(p for p in worker_data.iterdir() if p.is_dir())
    assert len(folders) == 2, folders
    partial, whole = folders  # named by time: the lost worker's first
    assert whole.name.endswith(f"_restart1_{run_id}") and partial.name.endswith(f"Z_{run_id}"), folders
    assert json.loads((whole / "restart.json").read_text())["replaces"] == partial.name
    assert json.loads((partial / "superseded.json").read_text())["superseded_by"] == whole.name
    processed = [json.loads(line)["index"] for line in (whole / "feedback.jsonl").read_text().splitlines()]
    assert processed == list(range(VOLUMES)), processed

    # the figure the issue asks for: from the worker being back to the first live value at the stimulus program
    resumed = got[m].received - t_back
    print(f"\nworker back -> live feedback at the stimulus program: {resumed:.2f} s ({resumed / TR:.1f} TRs of "
          f"{TR} s); restarted at volume {n}, live again from volume {m}")
