"""The bundle's runtime hook (in rtcontrol.spec) makes the executable take python's -m / -c / main.py forms.

Tested without building the bundle: the hook's source runs as a script under this Python, with the
arguments the worker, the embedded programs and the AFNI reaper pass to ``sys.executable``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from rtcontrol.paths import app_root


@pytest.fixture(scope="module")
def hook(tmp_path_factory) -> Path:
    spec = (app_root() / "rtcontrol.spec").read_text()
    m = re.search(r'PYTHON_CLI_HOOK = r"""(.*?)"""', spec, re.S)
    assert m, "rtcontrol.spec has no PYTHON_CLI_HOOK"
    path = tmp_path_factory.mktemp("hook") / "rthook_python_cli.py"
    path.write_text(m.group(1) + "\nprint('MAIN', sys.argv[1:])\n")  # what main.py would get
    return path


def run(hook: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(hook), *args], capture_output=True, text=True, timeout=60)


def test_dash_m_runs_a_module_with_its_arguments(hook: Path, tmp_path: Path) -> None:
    done = run(hook, "-m", "rtcontrol.recording", "list", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert f"no interrupted run under {tmp_path}" in done.stdout and "MAIN" not in done.stdout


def test_dash_c_with_interpreter_flags_and_exit_status(hook: Path) -> None:
    done = run(hook, "-S", "-c", "import sys; print(sys.argv); sys.exit(3)", "a", "b")
    assert done.returncode == 3 and "['-c', 'a', 'b']" in done.stdout
    failed = run(hook, "-c", "raise ValueError('boom')")
    assert failed.returncode == 1 and "ValueError: boom" in failed.stderr


def test_main_py_path_is_dropped_and_other_arguments_pass_through(hook: Path) -> None:
    done = run(hook, "/opt/rtcontrol/_internal/main.py", "--worker", "--port", "0")
    assert "MAIN ['--worker', '--port', '0']" in done.stdout
    assert "MAIN ['run', '--no-gui']" in run(hook, "run", "--no-gui").stdout
