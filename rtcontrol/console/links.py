"""Connect the controller to the parts of rtcontrol that do the real work.

Each part is imported only here, so the controller stays testable on its own and a build
without one part still opens: the operator is told plainly what is missing.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtcontrol.scanner.volume import Timeline

if TYPE_CHECKING:
    from rtcontrol.console.session import ConsoleSession

log = logging.getLogger("rtcontrol.console")


async def connect_all(session: ConsoleSession, stack: contextlib.AsyncExitStack) -> None:
    """Worker and subject agent: remote when the settings give a URL, embedded otherwise."""
    c = session.controller
    await _connect_worker(session, stack)
    await _connect_subject(session, stack)
    if c.settings.afni.enabled:
        c.warn("AFNI sending is on in the settings, but the AFNI sender is not available in this build", "afni")
        c.connection("afni", "off", detail="not available in this build")


async def _connect_worker(session: ConsoleSession, stack: contextlib.AsyncExitStack) -> None:
    c = session.controller
    s = c.settings.worker
    try:
        from rtcontrol.worker.client import WorkerClient  # noqa: F401
    except ImportError as exc:
        c.warn(f"no worker in this build ({exc.name} missing): volumes are shown but not analysed", "worker")
        c.connection("worker", "off", detail="not available in this build")
        return
    raise NotImplementedError  # replaced when the worker client lands


async def _connect_subject(session: ConsoleSession, stack: contextlib.AsyncExitStack) -> None:
    c = session.controller
    try:
        from rtcontrol.subject.link import SubjectClient  # noqa: F401
    except ImportError as exc:
        c.warn(f"no subject agent link in this build ({exc.name} missing): feedback stays on the console", "subject")
        c.connection("subject", "off", detail="not available in this build")
        return
    raise NotImplementedError  # replaced when the subject link lands


# --- the simulated scanner ----------------------------------------------------------------
def synthesize(out_dir: Path, volumes: int, tr: float) -> Path:
    """A synthetic run (Siemens mosaic DICOM) for the demo, written by the scanner simulator."""
    from rtcontrol.scanner import synth

    spec = synth.SynthSpec(volumes=volumes, tr=tr)
    synth.write_run(spec, out_dir)
    return out_dir


def series_folder(out_dir: Path) -> Path:
    """The folder holding the DICOM files ``synthesize`` wrote (it may nest them)."""
    for path in sorted(Path(out_dir).rglob("*")):
        if path.is_file() and path.suffix.lower() in (".dcm", ".ima", ""):
            return path.parent
    return Path(out_dir)


async def replay(source: Path, watch_dir: Path, tr: float) -> None:
    from rtcontrol.scanner.replay import replay as scanner_replay

    await scanner_replay(source, watch_dir, tr=tr)


def feedback_timeline(value: Any) -> Timeline:
    if isinstance(value, Timeline):
        return value
    if isinstance(value, dict):
        return Timeline.from_dict(value)
    return Timeline()
