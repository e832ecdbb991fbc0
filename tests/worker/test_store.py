"""What the worker saves of a run restarted after the worker itself restarted mid-run."""

from __future__ import annotations

import json
from pathlib import Path

from rtcontrol.worker.store import RunStore


def test_a_restarted_run_is_saved_apart_and_each_folder_says_which_it_is(tmp_path: Path) -> None:
    lost = RunStore(tmp_path, "sub-01_run-01")  # the killed worker's partial save
    lost.feedback({"index": 0})
    again = RunStore(tmp_path, "sub-01_run-01", restart=1)
    again.note_restart("sub-01_run-01", 1, f"/elsewhere/on/the/worker/{lost.dir.name}")  # only the name is used
    assert again.dir != lost.dir and again.dir.name.endswith("_restart1_sub-01_run-01")
    assert lost.dir.name.endswith("Z_sub-01_run-01")  # every run folder ends in _<run>
    note = json.loads((again.dir / "restart.json").read_text())
    assert (note["restart"], note["replaces"], note["replaces_found_here"]) == (1, lost.dir.name, True)
    assert json.loads((lost.dir / "superseded.json").read_text())["superseded_by"] == again.dir.name
    assert (lost.dir / "feedback.jsonl").read_text() == '{"index":0}\n'  # the partial save is kept as it was
    for s in (lost, again):
        s.close()


def test_a_previous_folder_that_is_not_this_runs_is_named_but_never_touched(tmp_path: Path) -> None:
    other = RunStore(tmp_path, "another-run")
    (tmp_path / "outside").mkdir()
    for previous in (str(tmp_path / "outside"), other.dir.name, "../../etc", ""):
        again = RunStore(tmp_path, "r1", restart=2)
        again.note_restart("r1", 2, previous)
        assert json.loads((again.dir / "restart.json").read_text())["replaces_found_here"] is False
        again.close()
    assert not (tmp_path / "outside" / "superseded.json").exists()
    assert not (other.dir / "superseded.json").exists()
    other.close()
