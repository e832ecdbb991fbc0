"""Runs whose project works in parallel, through a real worker over TLS on 127.0.0.1 and its Dask cluster."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rtcontrol.link.certs import make_certificate, server_context
from rtcontrol.link.tokens import TokenStore
from rtcontrol.paths import app_root
from rtcontrol.worker.client import WorkerClient
from rtcontrol.worker.cluster import DaskCluster
from rtcontrol.worker.projects import ProjectCatalog
from rtcontrol.worker.server import WorkerServer
from tests.support.wait import wait_until
from tests.support.worker import Recorder, make_volume, write_project

pytestmark = pytest.mark.timeout(150)

PARALLEL = """
    import os, time
    from pathlib import Path

    def work(i, data, marker):
        if marker and not os.path.exists(marker):
            Path(marker).write_text(str(os.getpid()))  # the test kills this Dask worker now
            time.sleep(5)
        return float(data.mean()) + i

    class Parallel(Project):
        settings = [Setting("marker", "", "str")]

        def process(self, volume, ctx):
            parts = ctx.map(work, range(4), ctx.share(volume.data), ctx.settings["marker"])
            return Result(feedback=None, metrics={"total": sum(parts)})
"""


WHERE = """
    import os

    class Where(Project):
        def process(self, volume, ctx):
            return Result(feedback=None, metrics={"pid": ctx.submit(os.getpid).result()})
"""

LEAKY = """
    import time

    class Leaky(Project):
        def process(self, volume, ctx):
            ctx.submit(time.sleep, 60)  # never waited for: must not pile up behind the run
            return 1.0
"""


@contextlib.asynccontextmanager
async def worker(projects: Path, processes: int = 1,
                 scheduler: str | None = None) -> AsyncIterator[tuple[WorkerServer, str, str, str]]:
    with tempfile.TemporaryDirectory(prefix="rtcontrol-dask-") as tmp:
        cert = make_certificate(["127.0.0.1"], Path(tmp) / "certs", days=1)
        tokens = TokenStore(Path(tmp) / "tokens.json")
        token = tokens.create("test")
        server = WorkerServer(tokens=tokens, ssl_context=server_context(cert.cert, cert.key),
                              catalog=ProjectCatalog([projects]), data_dir=Path(tmp) / "runs",
                              dask=DaskCluster(scheduler, processes=processes))
        port = await server.start("127.0.0.1", 0)
        try:
            yield server, f"wss://127.0.0.1:{port}", token, cert.fingerprint
        finally:
            await server.close()


@pytest.fixture
def projects(tmp_path: Path) -> Path:
    write_project(tmp_path / "projects", "parallel", PARALLEL)
    write_project(tmp_path / "projects", "where", WHERE)
    write_project(tmp_path / "projects", "leaky", LEAKY)
    return tmp_path / "projects"


async def test_the_cluster_starts_only_for_a_project_that_asks(projects: Path) -> None:
    rec = Recorder()
    async with worker(projects, processes=1) as (server, url, token, fp):
        async with WorkerClient(url, token, expected_fingerprint=fp, **rec.kwargs()) as client:
            await client.start_run("template", {"baseline": 1}, run="plain", tr=2.0)
            for i in range(2):
                await client.send_volume(make_volume(i, run="plain"))
            await client.stop_run()
            assert not server.dask.started  # a run that never asks costs nothing
            await client.start_run("parallel", {}, run="par", tr=2.0)
            await client.send_volume(make_volume(0, run="par"))
            await wait_until(lambda: len(rec.feedback) == 3, 60, "the parallel volume's result")
            assert server.dask.started
            await client.stop_run()
        cluster = server.dask.local
        assert cluster is not None
    assert server.dask.local is None and cluster.status.name == "closed"  # shut down with the worker
    assert rec.errors == []
    mean = float(make_volume(0, run="par").data.mean())
    assert rec.feedback[-1].metrics["total"] == pytest.approx(4 * mean + 6, rel=1e-5)


async def test_a_dask_worker_killed_mid_volume_does_not_lose_it(projects: Path, tmp_path: Path) -> None:
    rec = Recorder()
    marker = tmp_path / "dask-worker.pid"
    async with worker(projects, processes=2) as (server, url, token, fp):
        async with WorkerClient(url, token, expected_fingerprint=fp, **rec.kwargs()) as client:
            await client.start_run("parallel", {"marker": str(marker)}, run="kill", tr=2.0)
            for i in range(3):
                await client.send_volume(make_volume(i, run="kill"))
            await wait_until(marker.exists, 60, "a task to start on a Dask worker")
            await wait_until(lambda: marker.read_text() != "", 5, "the task's pid")
            pid = int(marker.read_text())
            assert pid != os.getpid()
            os.kill(pid, signal.SIGKILL)  # a Dask worker process dies in the middle of volume 0
            await wait_until(lambda: len(rec.feedback) == 3, 90, "every volume's result")
            stopped = await client.stop_run()
    assert rec.errors == [] and stopped["error"] is None
    assert [e.index for e in rec.feedback] == [0, 1, 2]
    for e in rec.feedback:
        mean = float(make_volume(e.index, run="kill").data.mean())
        assert e.metrics["total"] == pytest.approx(4 * mean + 6, rel=1e-5)


async def test_a_site_scheduler_is_used_instead_of_a_local_cluster(projects: Path) -> None:
    from distributed import Client

    from rtcontrol.worker.cluster import _start_local

    site = _start_local(1)  # stands for a site's scheduler and its Dask workers
    try:
        with Client(site.scheduler_address) as c:
            site_pids = set(c.run(os.getpid).values())
        rec = Recorder()
        async with worker(projects, scheduler=site.scheduler_address) as (server, url, token, fp):
            async with WorkerClient(url, token, expected_fingerprint=fp, **rec.kwargs()) as client:
                await client.start_run("where", {}, run="site", tr=2.0)
                await client.send_volume(make_volume(0, run="site"))
                await wait_until(lambda: rec.feedback or rec.errors, 60, "the volume's result")
                await client.stop_run()
            assert server.dask.local is None  # no cluster of its own
        assert rec.errors == []
        assert int(rec.feedback[0].metrics["pid"]) in site_pids
    finally:
        site.close(10)


async def test_work_left_behind_by_a_volume_is_cancelled_and_logged(projects: Path) -> None:
    from distributed import Client

    rec = Recorder()
    async with worker(projects, processes=1) as (server, url, token, fp):
        async with WorkerClient(url, token, expected_fingerprint=fp, **rec.kwargs()) as client:
            await client.start_run("leaky", {}, run="leak", tr=2.0)
            for i in range(3):
                await client.send_volume(make_volume(i, run="leak"))
            await wait_until(lambda: len(rec.feedback) == 3 or rec.errors, 60, "three results")
            await client.stop_run()
        async with Client(await server.dask.address(), asynchronous=True) as dask_client:
            processing = await dask_client.processing()
        assert not any(processing.values()), processing  # nothing left running on the cluster
    assert rec.errors == [] and [e.feedback for e in rec.feedback] == [1.0, 1.0, 1.0]
    cancelled = [m for m in rec.logs if "unfinished when process() returned: cancelled" in m]
    assert [m.split(":")[0] for m in cancelled] == ["volume 0", "volume 1", "volume 2"], rec.logs


def test_an_unreachable_site_scheduler_stops_the_worker_at_start(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.create("x")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    proc = subprocess.run(
        [sys.executable, str(app_root() / "main.py"), "--worker", "--insecure-loopback", "--port", "0",
         "--tokens", str(store.path), "--dask-scheduler", address],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert f"the Dask scheduler {address} cannot be reached" in proc.stderr
    assert "WORKER READY" not in proc.stdout


def test_the_site_scheduler_can_be_set_in_the_workers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from rtcontrol.worker.cli import add_arguments
    from rtcontrol.worker.cluster import SCHEDULER_ENV

    monkeypatch.setenv(SCHEDULER_ENV, "tcp://10.1.2.3:8786")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).dask_scheduler == "tcp://10.1.2.3:8786"
    assert parser.parse_args(["--dask-scheduler", "tcp://127.0.0.1:9"]).dask_scheduler == "tcp://127.0.0.1:9"
