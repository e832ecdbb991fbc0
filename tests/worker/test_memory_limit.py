"""Each run process has a memory limit: a project that keeps growing is stopped with a message
naming the limit, while other runs on the same worker (a real ``main.py --worker`` process) go on."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from rtcontrol.worker.client import WorkerClient
from rtcontrol.worker.embedded import local_worker
from rtcontrol.worker.runner import default_memory_limit, parse_memory, resident_memory
from tests.support.wait import wait_until
from tests.support.worker import Recorder, make_volume, write_project

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the limit reads /proc (Linux)")

MB = 2**20
LIMIT = 300 * MB

GROWER = """
    import numpy as np
    class Grower(Project):
        description = "keeps 40 MB per volume, touched (resident)"
        def start_run(self, ctx):
            self.kept = []
        def process(self, volume, ctx):
            self.kept.append(np.full(40 * 2**20 // 8, float(volume.index)))
            return float(len(self.kept))
"""

# reserves far more address space than LIMIT but touches little of it: what numpy/BLAS threads, glibc's
# per-thread malloc arenas and a Dask client's threads do. RLIMIT_AS would stop this healthy run.
RESERVER = """
    import mmap, threading
    import numpy as np
    class Reserver(Project):
        def start_run(self, ctx):
            self.reserved = mmap.mmap(-1, 2 * 2**30)  # 2 GiB of address space, untouched
            self.threads = [threading.Thread(target=lambda: np.ones(1000).sum()) for _ in range(8)]
            for t in self.threads:
                t.start()
        def process(self, volume, ctx):
            with open("/proc/self/status") as fh:
                fields = dict(line.split(":", 1) for line in fh)
            with open("/proc/self/oom_score_adj") as fh:
                oom = int(fh.read())
            return {"vm_kb": int(fields["VmSize"].split()[0]), "rss_kb": int(fields["VmRSS"].split()[0]), "oom": oom}
"""

# what the kernel's OOM killer does to a run process: SIGKILL from outside
KILLED = """
    import os, signal
    class Killed(Project):
        def process(self, volume, ctx):
            if volume.index == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            return 0.0
"""


@pytest.fixture
def projects(tmp_path: Path) -> Path:
    root = tmp_path / "projects"
    write_project(root, "grower", GROWER)
    write_project(root, "reserver", RESERVER)
    write_project(root, "killed", KILLED)
    return root


async def test_growing_project_is_stopped_naming_the_limit_and_other_runs_go_on(tmp_path: Path, projects: Path) -> None:
    grow, other = Recorder(), Recorder()
    async with local_worker(projects=[projects], data_dir=tmp_path / "runs", run_memory_limit=LIMIT) as w:
        assert w.pid is not None  # a real worker process
        async with WorkerClient(w.url, w.token, expected_fingerprint=w.fingerprint, **grow.kwargs()) as a, \
                WorkerClient(w.url, w.token, expected_fingerprint=w.fingerprint, **other.kwargs()) as b:
            await b.start_run("template", {"baseline": 1}, run="steady", tr=2.0)
            await b.send_volume(make_volume(0, run="steady"))
            await a.start_run("grower", {}, run="greedy", tr=2.0)
            # 40 MB per volume: 20 volumes would be 800 MB, far over the 300 MB limit
            for i in range(20):
                await a.send_volume(make_volume(i, run="greedy"))
                await wait_until(lambda i=i: len(grow.feedback) > i or ("greedy", "failed") in grow.runs, 20,
                               f"volume {i} of the growing run")
                if ("greedy", "failed") in grow.runs:
                    break
                await asyncio.sleep(0.15)  # a (fast) TR between volumes, as in a scan
            assert ("greedy", "failed") in grow.runs, \
                f"the growing run was never stopped ({len(grow.feedback)} volumes)"
            message = grow.errors[0][0]
            assert "used more than 300 MB" in message and "--run-memory-limit" in message, message
            assert 3 <= len(grow.feedback) <= 9  # stopped near 300 MB, not at the end of the data
            # the other console's run goes on, on the same worker
            for i in range(1, 4):
                await b.send_volume(make_volume(i, run="steady"))
            await b.stop_run()
            assert [e.index for e in other.feedback] == [0, 1, 2, 3] and other.errors == []
            # and the console whose run was stopped starts a new one there
            await a.start_run("template", {"baseline": 1}, run="again", tr=2.0)
            for i in range(2):
                await a.send_volume(make_volume(i, run="again"))
            await a.stop_run()
            assert [e.index for e in grow.feedback if e.run == "again"] == [0, 1]
            assert len(await a.list_projects()) >= 3  # the worker still answers
        worker_rss = resident_memory(w.pid)
        # the memory was the run's, not the worker's
        assert worker_rss is not None and worker_rss < 250 * MB, worker_rss
    (log_file,) = (tmp_path / "runs").glob("*_greedy/project.log")
    assert "used more than 300 MB" in log_file.read_text()


async def test_reserved_but_unused_memory_does_not_stop_a_run(projects: Path) -> None:
    rec = Recorder()
    async with local_worker(projects=[projects], in_process=True, run_memory_limit=LIMIT) as w:
        async with WorkerClient(w.url, w.token, expected_fingerprint=w.fingerprint, **rec.kwargs()) as client:
            await client.start_run("reserver", {}, run="r", tr=2.0)
            for i in range(3):
                await client.send_volume(make_volume(i, run="r"))
            await client.stop_run()
    assert rec.errors == [] and [e.index for e in rec.feedback] == [0, 1, 2]
    last = rec.feedback[-1].feedback
    assert last["vm_kb"] * 1024 > 2 * LIMIT and last["rss_kb"] * 1024 < LIMIT  # what RLIMIT_AS would have counted
    assert last["oom"] == 1000  # out of memory, the kernel takes a run process before the worker or the console


async def test_a_run_killed_from_outside_says_it_was_likely_out_of_memory(projects: Path) -> None:
    rec = Recorder()
    async with local_worker(projects=[projects], in_process=True, run_memory_limit=LIMIT) as w:
        async with WorkerClient(w.url, w.token, expected_fingerprint=w.fingerprint, **rec.kwargs()) as client:
            await client.start_run("killed", {}, run="k", tr=2.0)
            for i in range(3):
                await client.send_volume(make_volume(i, run="k"))
            await wait_until(lambda: ("k", "failed") in rec.runs, 15, "the run to fail")
    message = rec.errors[0][0]
    assert "exit code -9" in message
    assert "killed (SIGKILL), most likely because the machine ran out of memory" in message
    assert "--run-memory-limit is 300 MB" in message


def test_memory_sizes_are_read_with_or_without_a_unit() -> None:
    assert parse_memory("2048") == 2048 * MB
    assert parse_memory("512MB") == 512 * MB and parse_memory("2g") == 2 * 2**30 and parse_memory("1.5 GB") == 1536 * MB
    assert parse_memory("0") is None and parse_memory("off") is None
    for bad in ("", "-5", "lots", "12 parsecs", "nan"):
        with pytest.raises(ValueError, match="not a memory size"):
            parse_memory(bad)
    limit = default_memory_limit()
    assert limit is not None and 0 < limit < 2**50


def test_worker_refuses_a_bad_memory_limit(tmp_path: Path) -> None:
    import subprocess

    from rtcontrol.paths import app_root

    proc = subprocess.run(
        [sys.executable, str(app_root() / "main.py"), "--worker", "--insecure-loopback", "--tokens",
         str(tmp_path / "t.json"), "--run-memory-limit", "lots"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--run-memory-limit 'lots' is not a memory size" in proc.stderr


def test_worker_prints_the_limit_it_applies(tmp_path: Path) -> None:
    import subprocess

    from rtcontrol.link.tokens import TokenStore
    from rtcontrol.paths import app_root

    store = TokenStore(tmp_path / "t.json")
    store.create("x")
    proc = subprocess.Popen(
        [sys.executable, str(app_root() / "main.py"), "--worker", "--insecure-loopback", "--port", "0", "--tokens",
         str(store.path), "--data", str(tmp_path / "runs"), "--run-memory-limit", "1.5GB"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]  # READY, projects, memory
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "memory per run: 1536 MB (--run-memory-limit)\n" in lines, lines


async def test_the_console_prints_why_the_run_stopped(tmp_path: Path, projects: Path) -> None:
    """``main.py run``'s printer: the operator reads the limit and the flag, and the exit status is 1."""
    import io

    from rtcontrol.console import settings as S
    from rtcontrol.console.headless import run_session
    from rtcontrol.console.session import ConsoleSession

    s = S.default_settings().with_values("run", tr=0.2).with_values("project", name="grower", settings={})
    session = ConsoleSession(s, demo=True, demo_volumes=20, runs_dir=tmp_path / "runs", worker_options={
        "in_process": True, "projects": [projects], "run_memory_limit": LIMIT})
    out = io.StringIO()
    status = await run_session(session, out=out)
    text = out.getvalue()
    assert status == 1, text
    assert "[worker] error: run sub-01_ses-01_task-feedback_run-01: the project used more than 300 MB of memory " \
           "(the worker's --run-memory-limit" in text, text
