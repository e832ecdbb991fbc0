"""Command-line flags shared by the console window (``main.py``) and ``main.py run``."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

from rtcontrol.console import settings as settings_io
from rtcontrol.console.settings import RunSettings, SettingsError

#: Environment variables holding the access tokens (kept out of settings files that travel with runs).
WORKER_TOKEN_ENV = "RTCONTROL_WORKER_TOKEN"
SUBJECT_TOKEN_ENV = "RTCONTROL_SUBJECT_TOKEN"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--demo", action="store_true",
                        help="start a simulated scan at once (local worker and subject agent)")
    parser.add_argument("--worker", metavar="URL",
                        help="worker address, wss://host:port (default: start one on this machine)")
    parser.add_argument("--worker-token", metavar="TOKEN",
                        help="access token for the worker (or set RTCONTROL_WORKER_TOKEN)")
    parser.add_argument("--worker-fingerprint", metavar="SHA256",
                        help="accept only the worker certificate with this fingerprint (as 'main.py certs' or the "
                             "worker's WORKER READY line printed it); or [worker] fingerprint in the settings")
    parser.add_argument("--subject", metavar="URL",
                        help="subject agent address, wss://host:port (default: start one here)")
    parser.add_argument("--subject-token", metavar="TOKEN",
                        help="access token for the subject agent (or set RTCONTROL_SUBJECT_TOKEN)")
    parser.add_argument("--subject-fingerprint", metavar="SHA256",
                        help="accept only the subject agent certificate with this fingerprint; "
                             "or [subject] fingerprint in the settings")
    parser.add_argument(
        "--settings", metavar="FILE", type=Path,
        help="run settings (TOML); default: resources/default_run.toml with --watch, "
        "resources/demo_run.toml for a simulated scan",
    )
    parser.add_argument("--watch", metavar="DIR", type=Path, help="the scanner's export folder to watch")
    parser.add_argument("--volumes", type=int, help="volumes in the simulated scan (with --demo)")
    parser.add_argument("--replay", metavar="SERIES", type=Path,
                        help="the simulated scanner replays this recorded series (DICOM folder or NIfTI) "
                             "instead of a synthetic one")
    parser.add_argument("--runs-dir", type=Path, help="where run settings and recordings go (default ./runs)")


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """Settings file (or defaults) with the command-line addresses and folder laid over it."""
    if getattr(args, "settings", None):
        s = settings_io.load(args.settings)
    elif getattr(args, "watch", None) is None and not getattr(args, "replay", None):
        s = settings_io.demo_settings()  # no scanner folder: the simulated scan's settings
    else:
        s = settings_io.default_settings()
    if getattr(args, "worker", None):
        s = replace(s, worker=replace(s.worker, url=args.worker))
    worker_token = getattr(args, "worker_token", None) or os.environ.get(WORKER_TOKEN_ENV)
    if worker_token:
        s = replace(s, worker=replace(s.worker, token=worker_token))
    if getattr(args, "subject", None):
        s = replace(s, subject=replace(s.subject, url=args.subject))
    subject_token = getattr(args, "subject_token", None) or os.environ.get(SUBJECT_TOKEN_ENV)
    if subject_token:
        s = replace(s, subject=replace(s.subject, token=subject_token))
    for name in ("worker", "subject"):
        fingerprint = getattr(args, f"{name}_fingerprint", None)
        if fingerprint:
            s = replace(s, **{name: replace(getattr(s, name), fingerprint=fingerprint)})
    if getattr(args, "watch", None):
        s = replace(s, run=replace(s.run, watch_folder=str(args.watch)))
    number = getattr(args, "run_number", None)
    if number is not None:
        if number < 1:
            raise SettingsError(f"--run {number}: the run number starts at 1")
        s = replace(s, run=replace(s.run, run=number))
    if getattr(args, "next_run", False):
        s = next_free_run(s, runs_folder(args))
    return s.validate()


def runs_folder(args: argparse.Namespace) -> Path:
    """Where the runs are recorded (``--runs-dir``, default ``./runs`` as the console uses)."""
    return Path(getattr(args, "runs_dir", None) or Path.cwd() / "runs")


def next_free_run(s: RunSettings, runs_dir: Path) -> RunSettings:
    """The settings with the first run number, from theirs up, not yet recorded in ``runs_dir``."""
    while (runs_dir / s.run_id).exists():
        s = s.next_run()
    return s
