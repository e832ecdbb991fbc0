"""``python -m tools.bundle_check dist/rtcontrol``: a short headless session through the bundle.

Everything below runs the *bundled* executable (not this Python), on loopback only:

1. ``--version`` and ``--help``;
2. ``synth`` writes a small Siemens-mosaic run; ``convert`` turns it into NIfTI, whose voxels must equal
   the simulator's in-memory run (computed by the bundle's own code through `rtcontrol -c`);
3. ``certs`` and ``token`` make a TLS identity and an access token for the worker and the subject agent;
4. ``--worker`` and ``--subject`` start over TLS on free ports;
5. ``run --no-gui --settings RUN.toml`` connects to both (their certificates pinned in advance), while
   ``replay`` plays the synthetic run into its watch folder at the TR pace; the run must end with every
   volume analysed and its feedback delivered, and its BIDS recording must hold the same voxels;
   ``run --worker URL --subject URL`` must reach the console's run command;
6. ``-m rtcontrol.recording list`` (the interrupted-runs tool), ``run --demo`` (the console starts its own
   worker and subject agent from the bundle), a demo run of the searchlight project (``ctx.map`` on the
   worker's Dask LocalCluster, whose processes are the bundle too), and the console window and subject
   display under Qt's offscreen platform; a program stopped with SIGTERM must leave no process behind.

Prints one ``ok`` / ``FAIL`` / ``skip`` line per step and exits non-zero if any step failed. A step is
skipped only when a step it needs failed (so the check has already failed), never for a missing part.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rtcontrol import __version__

VOLUMES = 6
TR = 1.0
SHAPE = (32, 32, 12)
SEED = 11


class StepFailed(Exception):
    pass


class Skip(Exception):
    pass


class Program:
    """A bundled program running in the background, its output collected line by line."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, cwd=cwd, text=True, bufsize=1)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first output line matching ``pattern``; fails on timeout or exit."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StepFailed(f"{self.name}: no line matching {pattern!r} within {timeout:g} s\n{self.tail()}")
            try:
                line = self._queue.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                raise StepFailed(f"{self.name} exited ({self.proc.wait()}) before printing {pattern!r}\n{self.tail()}")
            self.lines.append(line)
            m = rx.search(line)
            if m:
                return m

    def finish(self, timeout: float) -> int:
        """Wait for the program to exit by itself; collect the rest of its output."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise StepFailed(f"{self.name} did not finish within {timeout:g} s\n{self.tail()}") from None
        self._drain(5.0)
        return code

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (then SIGKILL) this program only."""
        if self.proc.poll() is None:
            if sys.platform == "win32":
                self.proc.send_signal(signal.CTRL_BREAK_EVENT)
            else:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._drain(2.0)
        return self.proc.returncode

    def _drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    return
                continue
            if line is None:
                return
            self.lines.append(line)

    def tail(self, n: int = 25) -> str:
        self._drain(0.5)
        return "\n".join(f"    | {line}" for line in self.lines[-n:])


class Check:
    """Runs the steps in order and keeps score."""

    def __init__(self, bundle: Path, work: Path, verbose: bool) -> None:
        exe = bundle / ("rtcontrol.exe" if os.name == "nt" else "rtcontrol")
        if not exe.is_file():
            raise SystemExit(f"bundle_check: {exe} not found: build the bundle first (make bundle)")
        self.exe, self.work, self.verbose = exe, work, verbose
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        self.env.update({"RTCONTROL_HOME": str(work / "home"), "QT_QPA_PLATFORM": "offscreen"})
        self.failed: list[str] = []
        self.skipped: list[str] = []
        self.programs: list[Program] = []
        self.facts: dict[str, Any] = {}

    def step(self, name: str, fn: Callable[[], str | None]) -> bool:
        t0 = time.monotonic()
        try:
            detail = fn() or ""
        except Skip as exc:
            self.skipped.append(name)
            print(f"skip  {name}: {exc}", flush=True)
            return False
        except StepFailed as exc:
            self.failed.append(name)
            print(f"FAIL  {name}: {exc}", flush=True)
            return False
        except Exception as exc:  # a bug in a step is a failed step, with the reason
            self.failed.append(name)
            print(f"FAIL  {name}: {type(exc).__name__}: {exc}", flush=True)
            return False
        print(f"ok    {name} ({time.monotonic() - t0:.1f} s){': ' + detail if detail else ''}", flush=True)
        return True

    def run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run the bundled executable to completion."""
        done = subprocess.run([str(self.exe), *args], capture_output=True, text=True, timeout=timeout,
                              env=self.env, cwd=self.work, stdin=subprocess.DEVNULL)
        if self.verbose:
            print(f"    $ rtcontrol {' '.join(args)} -> {done.returncode}\n{done.stdout}{done.stderr}", flush=True)
        if done.returncode != 0:
            raise StepFailed(f"'rtcontrol {' '.join(args)}' exited "
                             f"{done.returncode}\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        return done

    def start(self, name: str, *args: str) -> Program:
        program = Program(name, [str(self.exe), *args], self.env, self.work)
        self.programs.append(program)
        return program

    def close(self) -> None:
        for program in reversed(self.programs):
            program.stop()


# --- the steps ----------------------------------------------------------------------------------


def version(c: Check) -> str:
    out = c.run("--version").stdout.strip()
    if out != f"rtcontrol {__version__}":
        raise StepFailed(f"expected 'rtcontrol {__version__}', got {out!r}")
    return out


def help_(c: Check) -> str:
    out = c.run("--help").stdout
    for word in ("--worker", "--subject", "convert", "replay", "run"):
        if word not in out:
            raise StepFailed(f"--help does not mention {word!r}")
    return "lists the programs and commands"


def synth(c: Check) -> str:
    out = c.work / "synth"
    c.run("synth", str(out), "--volumes", str(VOLUMES), "--tr", str(TR), "--shape", ",".join(map(str, SHAPE)),
          "--seed", str(SEED), "--block", "2")
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.suffix.lower() in (".dcm", ".ima", ""))
    if len(files) < VOLUMES:
        raise StepFailed(f"synth wrote {len(files)} image files into {out}, expected {VOLUMES}")
    c.facts["series"] = files[0].parent
    return f"{len(files)} DICOM files in {files[0].parent.relative_to(c.work)}"


EXPECTED = """
import sys
import numpy as np
from rtcontrol.scanner.synth import SynthSpec, generate
run = generate(SynthSpec(volumes={volumes}, tr={tr}, shape={shape}, seed={seed}, block_volumes=2))
np.save(sys.argv[1], run.data)
np.save(sys.argv[2], run.affine)
"""


def _expected_data(c: Check) -> tuple[Any, Any]:
    """The simulator's run in memory, computed by the bundle's own code (not this checkout's, which may be mid-edit)."""
    import numpy as np

    if "expected" not in c.facts:
        data, affine = c.work / "expected-data.npy", c.work / "expected-affine.npy"
        code = EXPECTED.format(volumes=VOLUMES, tr=TR, shape=SHAPE, seed=SEED)
        c.run("-c", code, str(data), str(affine))
        c.facts["expected"] = (np.load(data), np.load(affine))
    return c.facts["expected"]


def _same_voxels(c: Check, nifti: Path, what: str) -> str:
    import nibabel as nib
    import numpy as np

    data, affine = _expected_data(c)
    expected = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    got = nib.as_closest_canonical(nib.load(nifti))  # compared in world space: any axis order or flip is fine
    if got.shape != expected.shape:
        raise StepFailed(f"{what}: shape {got.shape}, expected {expected.shape}")
    if not np.allclose(got.affine, expected.affine, atol=1e-3):
        raise StepFailed(f"{what}: affine differs from the simulator's\n{got.affine}\n{expected.affine}")
    if not np.array_equal(got.get_fdata(), expected.get_fdata()):
        raise StepFailed(f"{what}: voxel values differ from the simulator's")
    return f"{nifti.name}: {got.shape}, voxels equal the simulator's"


def convert(c: Check) -> str:
    if "series" not in c.facts:
        raise Skip("no synthetic series (synth failed)")
    out = c.work / "converted"
    c.run("convert", str(c.facts["series"]), "-o", str(out))
    niftis = sorted(out.rglob("*.nii.gz")) + sorted(out.rglob("*.nii"))
    if len(niftis) != 1:
        raise StepFailed(f"convert wrote {len(niftis)} NIfTI files into {out}, expected one")
    if not niftis[0].with_name(niftis[0].name.split(".nii")[0] + ".json").is_file():
        raise StepFailed(f"convert wrote no JSON sidecar beside {niftis[0].name}")
    return _same_voxels(c, niftis[0], "convert")


def identities(c: Check) -> str:
    for who in ("worker", "subject"):
        out = c.run("certs", "--host", "127.0.0.1", "--out", str(c.work / "certs"), "--name", who).stdout
        m = re.search(r"fingerprint:\s*(\S+)", out)
        if not m:
            raise StepFailed(f"certs printed no fingerprint:\n{out}")
        c.facts[f"{who}_fingerprint"] = m.group(1)
        store = c.work / f"{who}-tokens.json"
        token = c.run("token", "create", "--name", "bundle-check", "--store", str(store)).stdout.strip().splitlines()
        if not token or len(token[-1]) < 16:
            raise StepFailed(f"token create printed no token: {token!r}")
        c.facts[f"{who}_token"], c.facts[f"{who}_tokens"] = token[-1], store
    return "TLS certificates and tokens for the worker and the subject agent"


def _cert_args(c: Check, who: str) -> list[str]:
    certs = c.work / "certs"
    cert = next(iter(sorted(certs.glob(f"{who}*.crt")) + sorted(certs.glob(f"{who}*.pem"))), None)
    key = next(iter(sorted(certs.glob(f"{who}*.key"))), None)
    if cert is None or key is None:
        raise StepFailed(f"no certificate/key named {who}* in {certs}: {sorted(p.name for p in certs.iterdir())}")
    return ["--cert", str(cert), "--key", str(key), "--tokens", str(c.facts[f"{who}_tokens"])]


def worker(c: Check) -> str:
    if "worker_token" not in c.facts:
        raise Skip("no certificate or token (identities failed)")
    p = c.start("worker", "--worker", "--host", "127.0.0.1", "--port", "0", *_cert_args(c, "worker"),
                "--data", str(c.work / "worker-data"))
    m = p.wait_for(r"WORKER READY url=(\S+) fingerprint=(\S+)", 90)
    url, fp = m.group(1), m.group(2)
    if _norm(fp) != _norm(c.facts["worker_fingerprint"]):
        raise StepFailed(f"worker presents fingerprint {fp}, certs printed {c.facts['worker_fingerprint']}")
    c.facts["worker_url"] = url
    return url


def subject(c: Check) -> str:
    if "subject_token" not in c.facts:
        raise Skip("no certificate or token (identities failed)")
    p = c.start("subject agent", "--subject", "--host", "127.0.0.1", "--port", "0", "--tcp-port", "0",
                "--local-port", "0", *_cert_args(c, "subject"))
    m = p.wait_for(r"console link (wss://\S+)", 90)
    c.facts["subject_url"] = m.group(1)
    c.facts["subject_tcp"] = int(p.wait_for(r"NDJSON for PsychToolbox/MATLAB on 127\.0\.0\.1:(\d+)", 30).group(1))
    return m.group(1)


class StimulusProgram:
    """An NDJSON stimulus program on the agent's port (as a MATLAB script is): says the agent's consumer
    secret in its hello and counts the feedback values it is given."""

    def __init__(self, port: int, secret_file: Path) -> None:
        self.values: list[int] = []
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        hello = {"type": "hello", "name": "bundlecheck", "secret": secret_file.read_text().strip()}
        self.sock.sendall(json.dumps(hello).encode() + b"\n")
        self.sock.settimeout(None)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError), self.sock.makefile("rb") as lines:
            for line in lines:
                msg = json.loads(line)
                if msg.get("type") == "feedback":
                    self.values.append(int(msg["index"]))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


def _norm(fp: str) -> str:
    return re.sub(r"[^0-9a-f]", "", fp.lower().removeprefix("sha256:"))


def headless_run(c: Check) -> str:
    if "worker_url" not in c.facts or "subject_url" not in c.facts or "series" not in c.facts:
        raise Skip("needs the worker, the subject agent and the synthetic series")
    home = c.work / "home"
    home.mkdir(parents=True, exist_ok=True)
    pins = []
    for who in ("worker", "subject"):
        hostport = re.sub(r"^wss?://", "", c.facts[f"{who}_url"]).split("/")[0]
        pins.append(f"{hostport} {c.facts[f'{who}_fingerprint']}\n")
    (home / "known_hosts").write_text("".join(pins))  # pinned in advance: a changed certificate is refused
    watch = c.work / "watch"
    watch.mkdir()
    settings = c.work / "RUN.toml"
    # The addresses go in the settings file (not --worker/--subject flags), as a site's saved run settings would.
    settings.write_text(
        "[run]\n"
        'subject = "bc"\nsession = "01"\nrun = 1\ntask = "bundlecheck"\n'
        f"tr = {TR}\nexpected_volumes = {VOLUMES}\nend_after_trs = 8\nwatch_folder = {json.dumps(str(watch))}\n"
        '[project]\nname = "template"\n'
        f'[worker]\nurl = "{c.facts["worker_url"]}"\ntoken = "{c.facts["worker_token"]}"\n'
        f'[subject]\nurl = "{c.facts["subject_url"]}"\ntoken = "{c.facts["subject_token"]}"\n'
    )
    runs = c.work / "runs"
    stimulus = StimulusProgram(c.facts["subject_tcp"], home / "consumer.secret")  # the agent shares this home
    console = c.start("console", "run", "--no-gui", "--settings", str(settings), "--runs-dir", str(runs))
    time.sleep(2.0)  # let the console connect and start watching; the scanner may start any time after
    if console.proc.poll() is not None:
        raise StepFailed(f"the console exited ({console.proc.returncode}) before the scan\n{console.tail()}")
    scanner = c.start("scanner (replay)", "replay", str(c.facts["series"]), str(watch), "--tr", str(TR))
    code = console.finish(120)
    scanner.stop()
    stimulus.close()
    summary = next((line for line in reversed(console.lines) if line.startswith("run ")), "")
    m = re.search(r"(\d+) volumes, (\d+) feedback values, (\d+) delivered", summary)
    if code != 0 or not m:
        raise StepFailed(f"the console exited {code}\n{console.tail(40)}")
    volumes, feedback, delivered = map(int, m.groups())
    # The template project says nothing (None) while it learns its baseline; every real value must reach the subject.
    values = [v for v in re.findall(r"^volume\s+\d+\s+feedback\s+(\S+)", "\n".join(console.lines), re.M) if v != "None"]
    if (volumes, feedback) != (VOLUMES, VOLUMES) or not values or delivered < len(values):
        raise StepFailed(f"expected {VOLUMES} volumes analysed and all {len(values)} feedback values delivered, "
                         f"got: {summary}\n{console.tail(40)}")
    if len(stimulus.values) != len(values):
        raise StepFailed(f"the stimulus program got {len(stimulus.values)} of {len(values)} feedback values\n"
                         f"{console.tail(40)}")
    c.facts["runs"] = runs
    return summary


def run_flags(c: Check) -> str:
    """``run --worker URL --subject URL`` must reach the console's run command, not start the worker or subject
    agent."""
    settings = c.work / "RUN.toml"
    if not settings.is_file():
        raise Skip("no run settings (the headless run was skipped)")
    done = subprocess.run([str(c.exe), "run", "--no-gui", "--settings", str(settings), "--worker", "wss://127.0.0.1:9",
                           "--subject", "wss://127.0.0.1:9", "--runs-dir", str(c.work / "flag-runs")],
                          capture_output=True, text=True, timeout=120, env=c.env, cwd=c.work, stdin=subprocess.DEVNULL)
    out = done.stdout + done.stderr
    if "unrecognized arguments" in out or "WORKER READY" in out or "subject agent: console link" in out:
        raise StepFailed("the --worker/--subject flags of 'run' were taken as the worker/subject program modes "
                         f"(rtcontrol.cli looks for them anywhere on the command line):\n{out[-800:]}")
    if "127.0.0.1:9" not in out:
        raise StepFailed(f"the console did not try the worker address given with --worker:\n{out[-1500:]}")
    return f"the console tried wss://127.0.0.1:9 and said so (exit {done.returncode})"


def recording(c: Check) -> str:
    runs = c.facts.get("runs")
    if runs is None:
        raise Skip("no headless run")
    bolds = sorted(Path(runs).rglob("*_bold.nii.gz"))
    if not bolds:
        raise StepFailed(f"the console wrote no BIDS run under {runs}")
    return _same_voxels(c, bolds[0], "recorded run")


def recovery_tool(c: Check) -> str:
    runs = c.facts.get("runs")
    if runs is None:
        raise Skip("no headless run")
    out = c.run("-m", "rtcontrol.recording", "list", str(runs)).stdout.strip()
    if "no interrupted run" not in out:
        raise StepFailed(f"expected the finished run not to be listed as interrupted, got: {out}")
    return out


def worker_saved(c: Check) -> str:
    data = c.work / "worker-data"
    if "runs" not in c.facts:
        raise Skip("no headless run")
    saved = [p for p in data.rglob("*") if p.is_file()] if data.is_dir() else []
    if not saved:
        raise StepFailed(f"the worker saved nothing under {data}")
    return f"{len(saved)} files of the run saved by the worker"


def demo_run(c: Check) -> str:
    """The embedded default: the console starts its own worker and subject agent (the bundle runs itself)."""
    done = c.run("run", "--no-gui", "--demo", "--volumes", "4", "--runs-dir", str(c.work / "demo-runs"), timeout=180)
    summary = next((line for line in reversed(done.stdout.splitlines()) if line.startswith("run ")), "")
    m = re.search(r"(\d+) volumes, (\d+) feedback values", summary)
    if not m or (int(m.group(1)), int(m.group(2))) != (4, 4):
        raise StepFailed(f"expected 4 volumes and 4 feedback values, got: {summary or done.stdout[-2000:]}")
    return summary.split(";")[0]


SEARCHLIGHT_VOLUMES = 8
SEARCHLIGHT_MIN = 4  # min_volumes: the searchlight runs from the 4th volume (index 3) on


def searchlight_run(c: Check) -> str:
    """The searchlight project (``ctx.map`` on the worker's Dask cluster) in a demo run: the embedded worker starts
    a LocalCluster whose processes are the bundle itself, and every volume past the searchlight's minimum must
    have its score in the recorded confounds."""
    settings = c.work / "SEARCHLIGHT.toml"
    settings.write_text(
        "[run]\n"
        'subject = "sl"\nsession = "01"\nrun = 1\ntask = "searchlight"\n'
        f'tr = {TR}\nexpected_volumes = {SEARCHLIGHT_VOLUMES}\nend_after_trs = 5\nwatch_folder = ""\n'
        '[project]\nname = "searchlight"\n'
        f"[project.settings]\nblock_volumes = 2\nwindow = 8\nmin_volumes = {SEARCHLIGHT_MIN}\n"
        "motion_correction = false\n"
    )
    runs = c.work / "searchlight-runs"
    done = c.run("run", "--no-gui", "--demo", "--settings", str(settings), "--volumes", str(SEARCHLIGHT_VOLUMES),
                 "--runs-dir", str(runs), timeout=300)
    out = done.stdout + done.stderr
    m = re.search(r"parallel work on the Dask scheduler (\S+) \((\d+) thread", out)
    if not m or int(m.group(2)) < 1:
        raise StepFailed(f"the project did not connect to a Dask cluster:\n{out[-3000:]}")
    if re.search(r"\] error:|Traceback", out):
        raise StepFailed(f"the run reported an error:\n{out[-3000:]}")
    confounds = sorted(runs.rglob("*_desc-confounds_timeseries.tsv"))
    if not confounds:
        raise StepFailed(f"no confounds were recorded under {runs}\n{out[-2000:]}")
    lines = confounds[0].read_text().splitlines()
    cols = lines[0].split("\t")
    if "score_max" not in cols:
        raise StepFailed(f"the confounds have no searchlight score (columns {cols})")
    scores = [line.split("\t")[cols.index("score_max")] for line in lines[1:]]
    scored = [i for i, v in enumerate(scores) if v != "n/a"]
    expected = list(range(SEARCHLIGHT_MIN - 1, SEARCHLIGHT_VOLUMES))
    if len(scores) != SEARCHLIGHT_VOLUMES or scored != expected:
        raise StepFailed(f"expected searchlight scores for volumes {expected}, got {scores}")
    return f"ctx.map on {m.group(1)} ({m.group(2)} Dask worker threads): scores for volumes {expected}"


def windows(c: Check) -> str:
    """The console window and the subject display start from the bundle (Qt offscreen: no screen needed)."""
    display = c.start("subject display", "--subject", "--display", "--windowed", "--host", "127.0.0.1", "--port", "0",
                      "--tcp-port", "0", "--local-port", "0")
    display.wait_for(r"console link wss://", 90)
    console = c.start("console window", "--demo", "--volumes", "3", "--runs-dir", str(c.work / "gui-runs"))
    console.wait_for(r"run \S+ started", 120)
    time.sleep(3.0)  # a few volumes drawn
    for program in (console, display):
        if program.proc.poll() is not None:
            raise StepFailed(f"{program.name} exited ({program.proc.returncode})\n{program.tail()}")
        children = descendants(program.proc.pid)  # its embedded worker and subject agent, their run processes
        program.stop()
        if any("Traceback" in line for line in program.lines):
            raise StepFailed(f"{program.name} printed a traceback\n{program.tail(40)}")
        left = _still_running(children, 5.0)
        if left:
            for pid in left:  # started by this check: clean up, then report
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            raise StepFailed(f"{program.name}, stopped with SIGTERM, left {len(left)} process(es) running: "
                             + "; ".join(_cmdline(pid) for pid in left))
    return "console window ran a demo scan; subject display started; nothing left running after SIGTERM"


def leftovers(c: Check) -> list[int]:
    """Processes started by this check (they inherit its RTCONTROL_HOME) that are still running."""
    mark = f"RTCONTROL_HOME={c.env['RTCONTROL_HOME']}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(environ.parent.name)
            if pid != os.getpid() and mark in environ.read_bytes().split(b"\0") and not _zombie(pid):
                found.append(pid)
    return found


def nothing_left(c: Check) -> str:
    c.close()
    left = _still_running(leftovers(c), 5.0)
    if left:
        described = "; ".join(_cmdline(pid) for pid in left)
        for pid in left:  # started by this check: clean up, then report
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        raise StepFailed(f"{len(left)} process(es) were still running after every program ended: {described}")
    return "no process of this check is left"


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc; empty elsewhere)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, parent in parents.items() if parent == p]
        out += kids
        todo += kids
    return out


def _still_running(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def _zombie(pid: int) -> bool:
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return True


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return f"pid {pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
    return f"pid {pid}"


def stop_programs(c: Check) -> str:
    codes = {}
    for program in reversed(c.programs):
        if program.proc.poll() is None:
            codes[program.name] = program.stop()
    bad = {k: v for k, v in codes.items() if v not in (0, -signal.SIGTERM, 128 + signal.SIGTERM, 1)}
    if bad:
        raise StepFailed(f"programs did not stop cleanly on SIGTERM: {bad}")
    return ", ".join(f"{k} exited {v}" for k, v in codes.items()) or "nothing was running"


STEPS: list[tuple[str, Callable[[Check], str | None]]] = [
    ("--version", version),
    ("--help", help_),
    ("synth: simulated scanner run", synth),
    ("convert: DICOM to NIfTI", convert),
    ("certs + token", identities),
    ("--worker over TLS", worker),
    ("--subject over TLS", subject),
    ("run --no-gui with a replayed scan", headless_run),
    ("run --worker URL --subject URL (flags reach the console)", run_flags),
    ("the run's recording", recording),
    ("the worker's saved run", worker_saved),
    ("rtcontrol -m rtcontrol.recording list (interrupted runs)", recovery_tool),
    ("stopping the worker and subject agent", stop_programs),
    ("run --demo with an embedded worker and subject agent", demo_run),
    ("run --demo of the searchlight project (ctx.map on the worker's Dask cluster)", searchlight_run),
    ("console window and subject display (Qt offscreen)", windows),
    ("nothing left running", nothing_left),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bundle_check", description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path, help="the bundle folder (dist/rtcontrol)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder for a look afterwards")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every command's output")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rtcontrol-bundle-check-"))
    check = Check(args.bundle.resolve(), work, args.verbose)
    print(f"bundle check of {check.exe} (work folder {work})", flush=True)
    try:
        for name, fn in STEPS:
            check.step(name, functools.partial(fn, check))
    finally:
        check.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    passed = len(STEPS) - len(check.failed) - len(check.skipped)
    print(f"bundle check: {passed} passed, {len(check.failed)} failed, {len(check.skipped)} skipped", flush=True)
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
