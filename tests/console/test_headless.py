"""``main.py run --no-gui``: the same controller without a window; progress printed, exit status honest."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from rtcontrol.cli import main
from rtcontrol.console import settings as S
from rtcontrol.console.headless import run_session
from rtcontrol.console.session import ConsoleSession

pytestmark = pytest.mark.timeout(120)


async def test_demo_run_headless_to_the_end(tmp_path: Path) -> None:
    """The demo: synthetic scan replayed at TR 0.2 s, embedded worker and subject agent, recorded as BIDS."""
    s = S.default_settings().with_values("run", tr=0.2)
    s = s.with_values("project", name="template", settings={"baseline": 2})
    session = ConsoleSession(s, demo=True, demo_volumes=10, runs_dir=tmp_path / "runs",
                             worker_options={"in_process": True})
    out = io.StringIO()
    status = await run_session(session, out=out)
    text = out.getvalue()
    assert status == 0, text
    # no stimulus program is connected to the embedded agent: nothing is claimed as delivered, each is named
    assert "run sub-01_ses-01_task-feedback_run-01: 10 volumes, 10 feedback values, 0 delivered" in text
    assert ("feedback: 0 of 8 feedback values reached a stimulus program; 8 reached the subject agent with no "
            "stimulus program connected (volumes 2-9)") in text
    assert "ended: all 10 volumes arrived" in text
    assert text.count("at the subject agent") == 8
    assert text.count("feedback NOT shown: no stimulus program connected") == 8
    run_dir = tmp_path / "runs" / "sub-01_ses-01_task-feedback_run-01"
    assert S.load(run_dir / "run.toml").run.expected_volumes == 10
    assert list((tmp_path / "runs" / "bids").rglob("*_bold.nii.gz")), "the run was not written as BIDS"


def test_bad_settings_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "run.toml"
    bad.write_text("[run]\ntr = -2\n")
    assert main(["run", "--no-gui", "--settings", str(bad)]) == 2
    assert "[run] tr = -2.0" in capsys.readouterr().err


def test_no_watch_folder_is_explained(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--no-gui"]) == 2
    assert "no watch folder" in capsys.readouterr().err


async def test_an_interrupted_run_is_named_with_the_command_that_finishes_it(tmp_path: Path) -> None:
    import shlex
    import subprocess

    from tests.support.console import killed_run

    killed = killed_run(tmp_path / "runs")
    s = S.default_settings().with_values("run", tr=0.2)
    s = s.with_values("project", name="template", settings={"baseline": 2})
    session = ConsoleSession(s, demo=True, demo_volumes=4, runs_dir=tmp_path / "runs",
                             worker_options={"in_process": True})
    out = io.StringIO()
    await run_session(session, quiet=True, out=out)
    text = out.getvalue()
    assert "1 interrupted run(s) in" in text, text
    assert f"  {killed.name}: sub-killed ses-01 task-feedback run-1: 3 volumes recorded" in text
    command = text.split("finish them with: ", 1)[1].splitlines()[0]
    assert command.endswith(f"-m rtcontrol.recording finish {tmp_path / 'runs'}")
    # the printed command really finishes it
    done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "runs/bids/sub-killed/ses-01/func/sub-killed_ses-01_task-feedback_run-01_bold.nii.gz").is_file()


async def test_an_unreachable_worker_given_by_address_exits_2_before_any_run(tmp_path: Path) -> None:
    """A scripted run with an explicit worker address does not start half-connected: it names the link and why."""
    import socket

    with socket.socket() as probe:  # a loopback port with nothing listening on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    s = S.default_settings().with_values("run", tr=0.2)
    s = s.with_values("worker", url=f"wss://127.0.0.1:{port}", token="t")
    session = ConsoleSession(s, demo=True, demo_volumes=4, runs_dir=tmp_path / "runs")
    out = io.StringIO()
    assert await run_session(session, out=out) == 2
    text = out.getvalue()
    assert f"the worker link could not be opened: cannot connect to wss://127.0.0.1:{port}" in text
    assert not list((tmp_path / "runs").glob("sub-*")), "a run was started although the worker was unreachable"


async def test_a_wrong_subject_token_names_the_address_once_per_line(tmp_path: Path) -> None:
    from rtcontrol.link.pinning import KnownHosts
    from rtcontrol.subject.embedded import local_subject_agent

    async with local_subject_agent(tcp_port=None, local_port=None, secret_file=tmp_path / "consumer.secret") as info:
        known_hosts = tmp_path / "known_hosts"
        KnownHosts(known_hosts).add(info.url.removeprefix("wss://"), info.fingerprint)
        s = S.default_settings().with_values("run", tr=0.2).with_values("subject", url=info.url, token="wrong")
        session = ConsoleSession(s, demo=True, demo_volumes=3, runs_dir=tmp_path / "runs", known_hosts=known_hosts,
                                 worker_options={"in_process": True})
        out = io.StringIO()
        assert await run_session(session, out=out) == 2
    text = out.getvalue()
    assert f"the subject link could not be opened: {info.url}: the subject agent refused the token" in text, text
    lines = [line for line in text.splitlines() if "refused the token" in line]
    assert lines and all(line.count(info.url) == 1 for line in lines), lines
