"""main.py dispatch: version, help, unknown command."""

from __future__ import annotations

import subprocess
import sys

from rtcontrol.paths import app_root


def run_main(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(app_root() / "main.py"), *args], capture_output=True, text=True, timeout=60
    )


def test_version() -> None:
    proc = run_main("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("rtcontrol ")


def test_help_lists_every_command() -> None:
    from rtcontrol.cli import COMMANDS

    proc = run_main("--help")
    assert proc.returncode == 0
    for name in COMMANDS:
        assert name in proc.stdout


def test_unknown_command_is_an_error() -> None:
    proc = run_main("frobnicate")
    assert proc.returncode == 2
    assert "unknown command 'frobnicate'" in proc.stderr


def test_subcommand_options_named_like_modes_stay_with_the_subcommand(monkeypatch) -> None:
    """`main.py run --worker URL` runs the console's run command, not the worker program."""
    import rtcontrol.cli as cli

    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(cli, "_run_module", lambda module, description, prog, argv: calls.append((module, argv)) or 0)
    assert cli.main(["run", "--no-gui", "--worker", "wss://w:1", "--subject", "wss://s:2"]) == 0
    assert calls == [("rtcontrol.console.headless", ["--no-gui", "--worker", "wss://w:1", "--subject", "wss://s:2"])]
    calls.clear()
    assert cli.main(["--worker", "--port", "9"]) == 0
    assert calls == [("rtcontrol.worker.cli", ["--port", "9"])]


def test_every_program_and_command_module_is_there() -> None:
    """Each program and command the help lists is importable and has the two entry points (none is 'not built')."""
    import importlib

    from rtcontrol.cli import COMMANDS, GUI_MODULE, MODES

    for module_name, _ in [*COMMANDS.values(), *MODES.values(), GUI_MODULE]:
        module = importlib.import_module(module_name)
        assert callable(module.add_arguments) and callable(module.run), module_name
