"""ctx.share / ctx.map / ctx.submit on a real Dask LocalCluster on 127.0.0.1 (1-2 processes, 1 thread each)."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from rtcontrol.project import InProcess, RunContext
from rtcontrol.worker.cluster import DaskCluster, SchedulerUnreachable
from rtcontrol.worker.parallel import DaskParallel

pytestmark = pytest.mark.timeout(120)


class Counted:
    """A shared value that counts how often it is pickled (in this process: each time it is sent)."""

    pickled = 0

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __reduce__(self):
        Counted.pickled += 1
        return (Counted, (self.array,))


def pick(i: int, shared: Counted, scale: float = 1.0) -> float:
    return float(shared.array[i]) * scale


def total(a: np.ndarray) -> float:
    return float(a.sum())


def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def die_once(i: int, data: np.ndarray, marker: str) -> float:
    """The first call anywhere kills its own Dask worker process (as a crash or an OOM kill would)."""
    if not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return float(data[i])


def start_cluster(processes: int):
    from rtcontrol.worker.cluster import _start_local

    return _start_local(processes)


@pytest.fixture(scope="module")
def cluster():
    c = start_cluster(2)
    yield c
    c.close(10)


@pytest.fixture
def parallel(cluster):
    p = DaskParallel(lambda: cluster.scheduler_address, project_dir=Path(__file__).parent)
    yield p
    p.close()


def test_map_in_order_with_a_shared_array_sent_once(parallel: DaskParallel) -> None:
    ctx = RunContext.local(parallel=parallel)
    assert ctx.parallelism == 2
    data = Counted(np.arange(100_000, dtype=np.float64))
    Counted.pickled = 0
    shared = ctx.share(data)
    sent = Counted.pickled
    assert 1 <= sent <= 2  # once per Dask worker at most
    out = ctx.map(pick, range(0, 100_000, 2500), shared, scale=2.0)
    assert out == [2.0 * i for i in range(0, 100_000, 2500)]
    again = ctx.map(pick, range(40), shared)
    assert again == [float(i) for i in range(40)]
    assert Counted.pickled == sent  # 80 tasks later: the shared value never travelled with a task
    assert ctx.submit(total, ctx.share(np.ones(1000))).result() == 1000.0
    assert ctx.map(pick, [], shared) == []


def test_a_project_error_in_a_task_reaches_process(parallel: DaskParallel) -> None:
    ctx = RunContext.local(parallel=parallel)
    with pytest.raises(IndexError):
        ctx.map(pick, [0, 10**9], ctx.share(Counted(np.zeros(3))))


def test_work_left_running_when_process_returns_is_cancelled(parallel: DaskParallel) -> None:
    ctx = RunContext.local(parallel=parallel)
    volume_data = ctx.share(np.zeros(10))
    key = volume_data.future.key
    fast, stuck = ctx.submit(slow, 0.01), ctx.submit(slow, 60.0)
    assert fast.result(timeout=30) == 0.01
    assert parallel.end_volume() == 1  # the stuck one: cancelled, not left to pile up behind the run
    assert stuck.future.status == "cancelled"
    del volume_data  # a handle the project drops: the cluster frees the value
    client = parallel.client
    deadline = time.monotonic() + 20
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(client.processing().values()), client.processing()
    while key in client.who_has() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert key not in client.who_has()
    assert parallel.end_volume() == 0


def test_a_worker_killed_with_the_only_copy_of_shared_data_loses_nothing(tmp_path: Path) -> None:
    """One Dask process: its death loses the scattered data too; it is sent again and the map re-run."""
    cluster = start_cluster(1)
    try:
        p = DaskParallel(lambda: cluster.scheduler_address, project_dir=Path(__file__).parent)
        ctx = RunContext.local(parallel=p)
        data = ctx.share(np.arange(10.0))
        marker = tmp_path / "killed"
        assert ctx.map(die_once, range(10), data, str(marker)) == [float(i) for i in range(10)]
        assert marker.exists()  # a worker really died
        p.close()
    finally:
        cluster.close(10)


def test_an_unreachable_scheduler_is_named() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    address = f"tcp://127.0.0.1:{port}"
    p = DaskParallel(lambda: address, connect_timeout=2.0)
    with pytest.raises(SchedulerUnreachable, match=f"the Dask scheduler {address} cannot be reached"):
        RunContext.local(parallel=p).map(total, [np.ones(2)])


def test_without_a_cluster_the_same_calls_run_in_process() -> None:
    ctx = RunContext.local()
    assert isinstance(ctx.parallel, InProcess)
    shared = ctx.share(np.arange(5.0))
    assert ctx.map(pick, range(5), Counted(shared)) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert ctx.submit(total, shared).result() == 10.0
    assert ctx.parallelism == 1


async def test_the_local_cluster_starts_on_first_ask_and_stops_with_close() -> None:
    cluster = DaskCluster(processes=1)
    assert not cluster.started
    address = await cluster.address()
    assert address.startswith("tcp://127.0.0.1:") and cluster.started
    assert await cluster.address() == address  # one cluster for every run of the worker
    await cluster.close()
    assert not cluster.started
    host, port = address.removeprefix("tcp://").split(":")
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=2).close()
    with pytest.raises(RuntimeError, match="shutting down"):
        await cluster.address()


def test_a_malformed_scheduler_address_is_refused() -> None:
    with pytest.raises(ValueError, match="not tcp://HOST:PORT"):
        DaskCluster("127.0.0.1:8786")
