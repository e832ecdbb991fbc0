"""The worker's Dask cluster: a site's scheduler, or a LocalCluster started on first use.

Projects that call ``ctx.map``/``ctx.submit`` (see :mod:`rtcontrol.worker.parallel`) run their tasks on
Dask distributed. The worker owns the cluster, not the run: each run process asks the worker for the
scheduler's address and connects a ``Client`` to it. With ``--dask-scheduler tcp://HOST:PORT`` that is a
site's own scheduler (checked at start: unreachable is a clear error); otherwise a ``LocalCluster`` on
127.0.0.1 (one process per core, one thread each) is started the first time a run asks, so a worker
whose projects never ask pays nothing for Dask, and it is shut down with the worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any
from urllib.parse import urlsplit

from rtcontrol.errors import RtcontrolError

log = logging.getLogger(__name__)

#: Environment default for ``--dask-scheduler`` (e.g. set once in the worker's service file).
SCHEDULER_ENV = "RTCONTROL_DASK_SCHEDULER"


class SchedulerUnreachable(RtcontrolError, RuntimeError):
    pass


def default_processes() -> int:
    """One Dask worker process per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def parse_scheduler(address: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` (or ``tls://``) -> (host, port); a clear ValueError otherwise."""
    parts = urlsplit(address)
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or parts.port is None:
        raise ValueError(f"Dask scheduler address {address!r} is not tcp://HOST:PORT (or tls://HOST:PORT)")
    return parts.hostname, parts.port


async def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Open (and close) a TCP connection to the scheduler; raise :class:`SchedulerUnreachable` naming it."""
    host, port = parse_scheduler(address)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (TimeoutError, OSError) as exc:
        why = f"no answer within {timeout:.0f} s" if isinstance(exc, asyncio.TimeoutError) else str(exc)
        raise SchedulerUnreachable(f"the Dask scheduler {address} cannot be reached: {why}") from None
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass


class DaskCluster:
    """The scheduler address for the worker's runs; the embedded LocalCluster is started lazily."""

    def __init__(self, scheduler: str | None = None, processes: int | None = None) -> None:
        if scheduler:
            parse_scheduler(scheduler)
        self.scheduler = scheduler or None
        self.processes = processes or default_processes()
        self.local: Any = None  # the LocalCluster, once started
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def started(self) -> bool:
        return self.local is not None

    async def address(self) -> str:
        """The scheduler's address; the first call without a site scheduler starts the LocalCluster."""
        if self.scheduler:
            return self.scheduler
        async with self._lock:
            if self._closed:
                raise RuntimeError("the worker is shutting down; its Dask cluster is closed")
            if self.local is None:
                log.info("starting a Dask LocalCluster: %d process(es) on 127.0.0.1", self.processes)
                # in a thread: the cluster runs its own event loop there, the worker's loop stays free
                try:
                    self.local = await asyncio.to_thread(_start_local, self.processes)
                except Exception as exc:
                    log.exception("the local Dask cluster did not start")
                    raise RuntimeError("the worker's local Dask cluster did not start: "
                                       f"{type(exc).__name__}: {exc}") from exc
                log.info("Dask LocalCluster at %s", self.local.scheduler_address)
            return str(self.local.scheduler_address)

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            cluster, self.local = self.local, None
        if cluster is not None:
            await asyncio.to_thread(cluster.close, 10)


def _start_local(processes: int) -> Any:
    from distributed import LocalCluster  # only a worker whose runs ask for Dask imports it

    return LocalCluster(
        n_workers=processes, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR,  # (its HTTP server: loopback, any free port)
    )
