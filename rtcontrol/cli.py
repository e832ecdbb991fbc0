"""Command-line dispatch for ``main.py``.

Every program and subcommand lives in its own module, named in :data:`COMMANDS` or
:data:`MODES`, imported only when used. A module provides::

    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rtcontrol import __version__

#: Subcommands: name -> (module, one-line help).
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("rtcontrol.scanner.convert", "convert every series in a folder to NIfTI + JSON sidecar"),
    "replay": ("rtcontrol.scanner.replay", "replay a recorded series into a watch folder at the TR pace"),
    "synth": ("rtcontrol.scanner.synth", "write a synthetic run (Siemens mosaic DICOM) with known ground truth"),
    "certs": ("rtcontrol.link.certs_cli", "make a TLS key and self-signed certificate, print its fingerprint"),
    "token": ("rtcontrol.link.token_cli", "create an access token for a worker or subject agent"),
    "afni-feed": ("rtcontrol.afni.feed_cli", "send a NIfTI file or DICOM series to AFNI's realtime plugin"),
    "run": ("rtcontrol.console.headless", "run a scan with the console controller, with or without a window"),
    "bench": ("benchmarks.runner", "run the benchmarks and print BENCH lines (from a source checkout)"),
}

#: Programs chosen by a flag: flag -> (module, description).
MODES: dict[str, tuple[str, str]] = {
    "--worker": ("rtcontrol.worker.cli", "headless worker that runs experiment projects"),
    "--subject": ("rtcontrol.subject.cli", "subject agent on the presentation PC"),
}
GUI_MODULE = ("rtcontrol.gui.app", "the control-room console")


def _run_module(module_name: str, description: str, prog: str, argv: list[str]) -> int:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != "benchmarks":
            raise
        # the benchmarks live beside main.py in a checkout (benchmarks/), not in the package or the bundle
        print(f"{prog}: the benchmarks run from a source checkout (make bench); this install has no benchmarks/",
              file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=prog, description=description)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    return int(module.run(args) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("--version", "-V"):
        print(f"rtcontrol {__version__}")
        return 0
    if argv and argv[0] in ("-h", "--help", "help"):
        _print_help()
        return 0
    # A subcommand comes first; its own options may be named --worker/--subject (addresses).
    if argv and argv[0] in COMMANDS:
        module, description = COMMANDS[argv[0]]
        return _run_module(module, description, f"main.py {argv[0]}", argv[1:])
    for flag, (module, description) in MODES.items():
        if flag in argv:
            argv.remove(flag)
            return _run_module(module, description, f"main.py {flag}", argv)
    if argv and not argv[0].startswith("-"):
        print(f"main.py: unknown command {argv[0]!r}; try 'main.py --help'", file=sys.stderr)
        return 2
    return _run_module(GUI_MODULE[0], GUI_MODULE[1], "main.py", argv)


def _print_help() -> None:
    lines = [
        "usage: main.py [--demo] [console options]   the control-room console (GUI)",
        "       main.py --worker [options]            " + MODES["--worker"][1],
        "       main.py --subject [options]           " + MODES["--subject"][1],
        "       main.py COMMAND [options]",
        "",
        "commands:",
    ]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Each program and command takes --help."]
    print("\n".join(lines))
