"""Shared bits for worker tests: synthetic volumes and small test projects written to tmp dirs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from rtcontrol.link.events import FeedbackEvent, LogLine, Problem, RunChanged, route
from rtcontrol.scanner.volume import Volume


def make_volume(index: int, shape=(16, 16, 8), run: str = "run-1", level: float = 1000.0) -> Volume:
    rng = np.random.default_rng(index)
    data = (level + rng.normal(0, 5, shape)).astype(np.int16)
    vol = Volume(data=data, affine=np.diag([3.0, 3.0, 4.0, 1.0]), run=run, index=index, tr=2.0)
    vol.timeline.stamp("parsed")
    return vol


def write_project(root: Path, name: str, body: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "project.py").write_text(
        "from rtcontrol.project import Project, Result, Setting\n" + textwrap.dedent(body)
    )
    return folder


class Recorder:
    def __init__(self) -> None:
        self.feedback: list[FeedbackEvent] = []
        self.errors: list[tuple[str, str]] = []
        self.logs: list[str] = []
        self.runs: list[tuple[str, str]] = []

    def kwargs(self) -> dict:
        return dict(on_event=route({
            FeedbackEvent: self.feedback.append,
            Problem: lambda e: self.errors.append((e.message, e.traceback)),
            LogLine: lambda e: self.logs.append(e.message),
            RunChanged: lambda e: self.runs.append((e.run, e.state)),
        }))
