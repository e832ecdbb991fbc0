"""``main.py --worker`` as a real subprocess: the embedded local worker and start-up refusals."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rtcontrol.link.certs import make_certificate
from rtcontrol.link.events import FeedbackEvent, route
from rtcontrol.link.tokens import TokenStore
from rtcontrol.paths import app_root
from rtcontrol.worker.client import WorkerClient
from rtcontrol.worker.embedded import local_worker
from tests.support.wait import wait_until
from tests.support.worker import make_volume


async def test_subprocess_worker_serves_a_run(tmp_path: Path) -> None:
    feedback = []
    async with local_worker(data_dir=tmp_path / "runs") as w:
        assert w.pid is not None and w.url.startswith("wss://127.0.0.1:")
        async with WorkerClient(w.url, w.token, expected_fingerprint=w.fingerprint,
                                on_event=route({FeedbackEvent: feedback.append})) as client:
            assert client.fingerprint == w.fingerprint
            await client.start_run("template", {"baseline": 1}, run="sub", tr=2.0)
            for i in range(3):
                await client.send_volume(make_volume(i, run="sub"))
            await client.stop_run()
    assert [e.index for e in feedback] == [0, 1, 2]
    assert len(list((tmp_path / "runs").iterdir())) == 1


def worker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(app_root() / "main.py"), "--worker", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "args, needle",
    [
        ((), "TLS needs --cert and --key"),
        (("--insecure-loopback", "--host", "0.0.0.0", "--tokens", "{tokens}"), "only allowed on loopback"),
        (("--cert", "{cert}"), "give both --cert and --key"),
        (("--cert", "{cert}", "--key", "{key}", "--tokens", "{empty}"), "no tokens in"),
    ],
)
def test_worker_refuses_to_start_unsafely(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    files = make_certificate(["127.0.0.1"], tmp_path)
    store = TokenStore(tmp_path / "tokens.json")
    store.create("x")
    subst = {"tokens": str(store.path), "cert": str(files.cert), "key": str(files.key),
             "empty": str(tmp_path / "none.json")}
    proc = worker(*(a.format(**subst) for a in args))
    assert proc.returncode == 2
    assert needle in proc.stderr


def _running(pid: int) -> bool:
    """Alive and not a zombie: an orphan that has exited stays a zombie until init reaps it (seconds later on a
    busy machine, where init reaps in rounds), and a signal 0 still reaches a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back on the signal test
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"


async def test_embedded_worker_exits_when_its_console_is_killed(tmp_path) -> None:
    """A console killed outright (SIGKILL, no cleanup) must not leave its worker running."""
    script = (
        "import asyncio, sys\n"
        "from rtcontrol.worker.embedded import local_worker\n"
        "async def main():\n"
        f"    async with local_worker(data_dir={str(tmp_path)!r}) as w:\n"
        "        print(w.pid, flush=True)\n"
        "        await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        line = await asyncio.to_thread(parent.stdout.readline)
        assert line.strip().isdigit(), f"the console did not start its worker (it printed {line!r})"
        worker_pid = int(line)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        try:
            await wait_until(lambda: not _running(worker_pid), timeout=15,
                             what=f"worker {worker_pid} to exit after its console was killed")
        finally:
            if _running(worker_pid):
                os.kill(worker_pid, signal.SIGKILL)
    finally:
        if parent.poll() is None:
            parent.kill()
