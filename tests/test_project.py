"""The project API's own rules: what it exports, and that prepare_session is refused, not silently skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rtcontrol.project as api
from rtcontrol.scanner.volume import Volume


def test_volume_is_part_of_the_project_api() -> None:
    assert api.Volume is Volume
    assert {"Project", "Result", "RunContext", "Setting", "Volume", "run_offline"} <= set(api.__all__)


def test_a_project_that_defines_prepare_session_is_refused_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "project.py").write_text(
        "from rtcontrol.project import Project\n"
        "class Old(Project):\n"
        "    def prepare_session(self, ctx): pass\n"
        "    def process(self, volume, ctx): return 0.5\n"
    )
    with pytest.raises(api.ProjectError, match="prepare_session is no longer called.*start_run"):
        api.load_project_class(tmp_path)


def test_run_offline_takes_volumes_and_keeps_their_order(tmp_path: Path) -> None:
    (tmp_path / "project.py").write_text(
        "from rtcontrol.project import Project, Result\n"
        "class Counter(Project):\n"
        "    def start_run(self, ctx): self.seen = []\n"
        "    def process(self, volume, ctx):\n"
        "        self.seen.append(volume.index)\n"
        "        return Result(feedback=float(volume.index), metrics={'n': len(self.seen)})\n"
    )
    volumes = [Volume(data=np.zeros((2, 2, 2), np.int16), affine=np.eye(4), index=i, tr=2.0) for i in range(4)]
    results = api.run_offline(tmp_path, volumes)
    assert [r.feedback for r in results] == [0.0, 1.0, 2.0, 3.0]
    assert [r.metrics["n"] for r in results] == [1, 2, 3, 4]
