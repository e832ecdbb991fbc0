"""The simulated scanner of the demo: a synthetic run written once, then replayed into the watch folder."""

from __future__ import annotations

from pathlib import Path

from rtcontrol.scanner import synth
from rtcontrol.scanner.replay import replay as scanner_replay


def demo_spec(volumes: int, tr: float) -> synth.SynthSpec:
    """What the simulated scanner acquires: the synthetic defaults (off/on blocks of
    ``SynthSpec.block_volumes``, which the demo's roi_feedback settings model as ``block_volumes``)."""
    return synth.SynthSpec(volumes=volumes, tr=tr)


def synthesize(out_dir: Path, volumes: int, tr: float) -> Path:
    """A synthetic run (Siemens mosaic DICOM) for the demo, written by the scanner simulator."""
    synth.write_run(demo_spec(volumes, tr), out_dir)
    return out_dir


def series_folder(out_dir: Path) -> Path:
    """The folder holding the DICOM files ``synthesize`` wrote (it may nest them)."""
    for path in sorted(Path(out_dir).rglob("*")):
        if path.is_file() and path.suffix.lower() in (".dcm", ".ima", ""):
            return path.parent
    return Path(out_dir)


async def replay(source: Path, watch_dir: Path, tr: float) -> None:
    """Play a recorded (or synthetic) series into ``watch_dir`` at the TR pace."""
    await scanner_replay(source, watch_dir, tr=tr)
