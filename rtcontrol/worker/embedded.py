"""A worker on 127.0.0.1 for the console's embedded default and for tests.

    async with local_worker() as info:
        client = WorkerClient(info.url, info.token, expected_fingerprint=info.fingerprint)

It makes a fresh certificate and token in a temporary folder and starts the worker on a free
port, by default as a subprocess (``main.py --worker``): closer to a real remote worker, and
the console's event loop stays free. ``in_process=True`` runs it in the caller's loop instead.
The link is TLS with the fingerprint known in advance, so nothing is pinned on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from rtcontrol.link import transport
from rtcontrol.link.certs import make_certificate, server_context
from rtcontrol.link.tokens import TokenStore
from rtcontrol.paths import app_root
from rtcontrol.worker.cluster import DaskCluster
from rtcontrol.worker.projects import ProjectCatalog
from rtcontrol.worker.runner import AUTO_MEMORY
from rtcontrol.worker.server import WorkerServer

READY = re.compile(r"WORKER READY url=(\S+) fingerprint=(\S+)")


@dataclass(frozen=True)
class LocalWorker:
    url: str
    token: str
    fingerprint: str
    data_dir: Path
    pid: int | None  # None when in-process


@contextlib.asynccontextmanager
async def local_worker(
    *,
    projects: list[Path] | tuple[Path, ...] = (),
    data_dir: Path | None = None,
    in_process: bool = False,
    volume_timeout: float = 30.0,
    start_timeout: float = 30.0,
    max_size: int | None = None,
    run_memory_limit: int | None = AUTO_MEMORY,
    dask_processes: int | None = None,
) -> AsyncIterator[LocalWorker]:
    """``run_memory_limit`` in bytes per run process (None: no limit; default half the machine's memory)."""
    with tempfile.TemporaryDirectory(prefix="rtcontrol-worker-") as tmp:
        tmpdir = Path(tmp)
        cert = make_certificate(["127.0.0.1", "localhost"], tmpdir / "certs", days=2)
        tokens = TokenStore(tmpdir / "tokens.json")
        token = tokens.create("embedded-console")
        data = Path(data_dir) if data_dir else tmpdir / "runs"
        if in_process:
            server = WorkerServer(
                tokens=tokens, ssl_context=server_context(cert.cert, cert.key),
                catalog=ProjectCatalog(list(projects)), data_dir=data, volume_timeout=volume_timeout,
                run_memory_limit=run_memory_limit, dask=DaskCluster(processes=dask_processes),
                max_size=max_size or transport.DEFAULT_MAX_SIZE,
            )
            port = await server.start("127.0.0.1", 0)
            try:
                yield LocalWorker(f"wss://127.0.0.1:{port}", token, cert.fingerprint, data, None)
            finally:
                await server.close()
            return
        cmd = [
            sys.executable, str(app_root() / "main.py"), "--worker", "--host", "127.0.0.1", "--port", "0",
            "--cert", str(cert.cert), "--key", str(cert.key), "--tokens", str(tokens.path), "--data", str(data),
            "--volume-timeout", str(volume_timeout), "--exit-with-parent",
        ]
        for p in projects:
            cmd += ["--projects", str(p)]
        if max_size:
            cmd += ["--max-size-mb", str(max_size / 2**20)]
        if run_memory_limit != AUTO_MEMORY:
            cmd += ["--run-memory-limit", f"{run_memory_limit / 2**20:.3f}MB" if run_memory_limit else "0"]
        if dask_processes:
            cmd += ["--dask-processes", str(dask_processes)]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            url = await _wait_ready(proc, start_timeout)
            drain = asyncio.create_task(_drain(proc))
            yield LocalWorker(url, token, cert.fingerprint, data, proc.pid)
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            with contextlib.suppress(NameError):
                drain.cancel()


async def _wait_ready(proc: asyncio.subprocess.Process, timeout: float) -> str:
    assert proc.stdout and proc.stderr

    async def first_ready() -> str:
        async for raw in proc.stdout:  # type: ignore[union-attr]
            m = READY.search(raw.decode(errors="replace"))
            if m:
                return m.group(1)
        err = (await proc.stderr.read()).decode(errors="replace")  # type: ignore[union-attr]
        raise RuntimeError(f"the local worker exited before it was ready:\n{err.strip()}")

    try:
        return await asyncio.wait_for(first_ready(), timeout)
    except TimeoutError:
        raise RuntimeError(f"the local worker did not start within {timeout:.0f} s") from None


async def _drain(proc: asyncio.subprocess.Process) -> None:
    """Keep reading the worker's output so its pipes never fill up."""
    async def pump(stream: asyncio.StreamReader | None) -> None:
        if stream is not None:
            async for _ in stream:
                pass

    await asyncio.gather(pump(proc.stdout), pump(proc.stderr))
