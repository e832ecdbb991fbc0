"""Real worker, subject agent, console and scanner-replay processes for the fault suite, all on 127.0.0.1.

Every program is started with the README's own command (``python main.py --worker ...``), in its own process
group so that a test can kill it (and the run processes it started) by id; :meth:`Rig.close` kills whatever
is still running, whatever happened in the test. Output is kept line by line with the time it was read, and
copied to ``<tmp>/<name>.log`` for a failing test's post-mortem.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import re
import signal
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "main.py"
HOST = "127.0.0.1"

#: Test projects installed in the worker's temporary projects folder: name -> the body of ``process``.
LEDGER_PROJECT = '''
from rtcontrol.project import Project, Result


class Ledger(Project):
    """Feedback = the volume's index, so the stimulus program can tell which value it got."""
    description = "feedback is the volume index (fault suite)"

    def process(self, volume, ctx):
        return Result(feedback=float(volume.index), metrics={"index": volume.index})
'''


#: Process groups started and not yet reaped: killed at exit even if a test's own clean-up never ran.
_GROUPS: set[int] = set()


@atexit.register
def _kill_leftovers() -> None:
    for pgid in list(_GROUPS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGCONT)
            os.killpg(pgid, signal.SIGKILL)


class Proc:
    """One program: its output lines (with arrival time) and the signals a test sends it."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name, self.proc, self.log_path = name, proc, log
        self.lines: list[tuple[float, str]] = []
        self._log = open(log, "a", encoding="utf-8")
        self._reader = asyncio.create_task(self._read())
        _GROUPS.add(proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            text = line.decode("utf-8", "replace").rstrip("\n")
            self.lines.append((time.monotonic(), text))
            self._log.write(text + "\n")
            self._log.flush()

    async def wait_line(self, pattern: str, timeout: float = 30.0, after: int = 0) -> re.Match[str]:
        """The first output line (from line number ``after`` on) matching ``pattern``; bounded by ``timeout``."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = after
        while True:
            for _, line in self.lines[seen:]:
                if m := rx.search(line):
                    return m
            seen = len(self.lines)
            if self.proc.returncode is not None and self._reader.done():
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}) before printing /{pattern}/:\n"
                                     + self.text[-4000:])
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no line /{pattern}/ within {timeout:.0f} s:\n" + self.text[-4000:])
            await asyncio.sleep(0.02)

    def time_of(self, pattern: str, after: int = 0) -> float | None:
        rx = re.compile(pattern)
        return next((t for t, line in self.lines[after:] if rx.search(line)), None)

    async def wait(self, timeout: float) -> int:
        """The exit status; the program is killed (and the test fails) if it runs longer than ``timeout``."""
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.kill_group()
            raise AssertionError(f"{self.name} still running after {timeout:.0f} s:\n" + self.text[-4000:]) from None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._reader, 5.0)
        return int(self.proc.returncode)

    def signal(self, sig: int) -> None:
        """A signal to this program only (not to the run processes it started)."""
        if self.proc.returncode is None:
            os.kill(self.pid, sig)

    def kill_group(self) -> None:
        """SIGKILL to this program's process group (its run processes too); a stopped one dies as well."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGCONT)
            os.killpg(self.pid, signal.SIGKILL)

    async def close(self) -> None:
        self.kill_group()
        _GROUPS.discard(self.pid)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait(), 5.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 2.0)
        self._log.close()


@dataclass
class Worker:
    proc: Proc
    url: str
    port: int
    data: Path


@dataclass
class Agent:
    proc: Proc
    url: str
    port: int
    tcp_port: int
    local_port: int
    home: Path

    def secret(self) -> str | None:
        """The consumer secret stimulus programs say in their hello (None before the agent writes one)."""
        path = self.home / "consumer.secret"
        return path.read_text().strip() if path.is_file() else None


class Rig:
    """Certificates, tokens, homes and every process of one scenario, in one temporary folder."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []
        self.projects = tmp / "projects"
        self.cert = tmp / "certs" / "rtcontrol.crt"
        self.key = tmp / "certs" / "rtcontrol.key"
        self.fingerprint = ""
        self.worker_token = ""
        self.subject_token = ""
        self._names: dict[str, int] = {}

    def home(self, role: str) -> Path:
        path = self.tmp / f"home-{role}"
        path.mkdir(exist_ok=True)
        return path

    def env(self, role: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(RTCONTROL_HOME=str(self.home(role)), PYTHONUNBUFFERED="1", QT_QPA_PLATFORM="offscreen")
        env.pop("RTCONTROL_WORKER_TOKEN", None)
        env.pop("RTCONTROL_SUBJECT_TOKEN", None)
        return env

    async def run(self, *args: str, role: str = "setup", timeout: float = 60.0) -> str:
        """A short command to its end; its standard output (it must exit 0)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(MAIN), *args, cwd=self.tmp, env=self.env(role),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"main.py {' '.join(args)} took over {timeout:.0f} s") from None
        assert proc.returncode == 0, f"main.py {' '.join(args)} exited {proc.returncode}: {err.decode()}"
        return out.decode()

    async def setup(self) -> Rig:
        """One certificate for 127.0.0.1 (worker and agent), a token for each, the ledger project."""
        certs, wtok, stok = await asyncio.gather(
            self.run("certs", "--host", HOST, "--out", str(self.cert.parent)),
            self.run("token", "create", "--name", "console", role="worker"),
            self.run("token", "create", "--name", "console", role="subject"),
        )
        self.fingerprint = re.search(r"fingerprint: (\S+)", certs).group(1)  # type: ignore[union-attr]
        self.worker_token, self.subject_token = wtok.split()[0], stok.split()[0]
        self.add_project("ledger", LEDGER_PROJECT)
        return self

    def add_project(self, name: str, source: str) -> None:
        folder = self.projects / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "project.py").write_text(textwrap.dedent(source))

    def pin(self, *ports: int) -> None:
        """Pin our certificate for these ports in the console's known_hosts (as an operator who compared it)."""
        path = self.home("console") / "known_hosts"
        old = path.read_text() if path.exists() else ""
        path.write_text(old + "".join(f"{HOST}:{p} {self.fingerprint}\n" for p in ports))

    async def spawn(self, name: str, *args: str, role: str) -> Proc:
        n = self._names[name] = self._names.get(name, 0) + 1
        label = name if n == 1 else f"{name}-{n}"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(MAIN), *args, cwd=self.tmp, env=self.env(role), start_new_session=True,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        p = Proc(label, proc, self.tmp / f"{label}.log")
        self.procs.append(p)
        return p

    async def start_worker(self, port: int = 0, *extra: str) -> Worker:
        data = self.tmp / "worker-data"
        p = await self.spawn("worker", "--worker", "--host", HOST, "--port", str(port), "--cert", str(self.cert),
                             "--key", str(self.key), "--projects", str(self.projects), "--data", str(data),
                             *extra, role="worker")
        m = await p.wait_line(r"WORKER READY url=(wss://127\.0\.0\.1:(\d+))", timeout=60)
        return Worker(p, m.group(1), int(m.group(2)), data)

    async def start_agent(self) -> Agent:
        p = await self.spawn("agent", "--subject", "--host", HOST, "--port", "0", "--cert", str(self.cert),
                             "--key", str(self.key), "--tcp-port", "0", "--local-port", "0", role="subject")
        url = await p.wait_line(r"console link (wss://127\.0\.0\.1:(\d+))", timeout=60)
        local = await p.wait_line(r"websocket ws://127\.0\.0\.1:(\d+)/ws")
        tcp = await p.wait_line(r"NDJSON .* on 127\.0\.0\.1:(\d+)")
        return Agent(p, url.group(1), int(url.group(2)), int(tcp.group(1)), int(local.group(1)), self.home("subject"))

    async def start_console(self, settings: Path, watch: Path, runs: Path, *, worker: str, subject: str | None,
                            worker_token: str | None = None, name: str = "console") -> Proc:
        """``main.py run --no-gui``; returns once the run is started and waits for the scanner."""
        watch.mkdir(parents=True, exist_ok=True)
        args = ["run", "--no-gui", "--settings", str(settings), "--watch", str(watch), "--runs-dir", str(runs),
                "--worker", worker, "--worker-token", worker_token or self.worker_token]
        if subject is not None:
            args += ["--subject", subject, "--subject-token", self.subject_token]
        p = await self.spawn(name, *args, role="console")
        await p.wait_line(r"ready: waiting for the scanner", timeout=60)
        return p

    async def replay(self, series: Path, watch: Path, *, tr: float, count: int) -> Proc:
        """The scanner: ``main.py replay`` writes ``count`` volumes into ``watch`` at the TR pace."""
        return await self.spawn("replay", "replay", str(series), str(watch), "--tr", f"{tr:g}", "--count",
                                str(count), role="scanner")

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.procs), return_exceptions=True)


def write_settings(path: Path, *, tr: float, volumes: int, project: str = "ledger", end_after_trs: int = 8,
                   run: int = 1) -> Path:
    """Run settings for ``main.py run --settings``."""
    path.write_text(textwrap.dedent(f"""\
        [run]
        subject = "01"
        session = "01"
        run = {run}
        task = "faults"
        tr = {tr}
        expected_volumes = {volumes}
        end_after_trs = {end_after_trs}
        [project]
        name = "{project}"
        """))
    return path


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")
