"""A run resumed on a restarted worker: the BIDS export keeps the catch-up results' metrics and says so.

The journal is written as the console's controller writes it (``record_feedback`` for live feedback, a
``catch_up_feedback`` event for a restarted worker's catch-up). The fault suite does the same with real
processes (tests/faults/test_worker_restart.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from rtcontrol.recording import Recorder
from rtcontrol.recording.journal import read_journal
from rtcontrol.recording.results import run_results
from rtcontrol.scanner.synth import SynthRun
from tests.support.recording import run_settings

MOTION = ("tx", "ty", "tz", "rx", "ry", "rz")


def _metrics(run: SynthRun, i: int) -> dict[str, float]:
    metrics = dict(zip(MOTION, map(float, run.truth["motion"]["params"][i])))
    metrics["roi_mean"] = 100.0 + i
    return metrics


def _catch_up(rec: Recorder, run: SynthRun, i: int) -> None:
    """As the controller journals a restarted worker's result for an old volume (never shown)."""
    stamps = {"file_seen": time.monotonic() - 1.0, "worker_received": time.monotonic(),
              "result_ready": time.monotonic(), "feedback_received": time.monotonic()}
    rec.record_event("catch_up_feedback", f"feedback for volume {i} computed again after the worker restarted: "
                     "catch-up, not shown", index=i, feedback=i / 10, metrics=_metrics(run, i), timeline=stamps)


def _live(rec: Recorder, run: SynthRun, i: int, volume) -> None:
    volume.timeline.stamp("result_ready")
    volume.timeline.stamp("feedback_received")
    rec.record_feedback("r1", i, i / 10, _metrics(run, i), volume.timeline)
    rec.record_timeline("r1", i, {"subject_delivered": time.monotonic()})


def _resumed_run(tmp_path: Path, run: SynthRun) -> Path:
    """12 volumes: 0..4 live; the worker restarts at 7 and replays 0..6 (5 and 6 only catch-up); the second
    worker restarts too and catches 6 up again; live from 7 (8's feedback record comes twice); 11 gets no result."""
    rec = Recorder(tmp_path / "run", run_settings())
    volumes = {}
    for i in range(12):
        v = volumes[i] = run.to_volume(i, run="r1")
        v.timeline.stamp("file_seen")
        rec.record_volume(v)
        if i < 5:
            _live(rec, run, i, v)
    for i in range(7):
        _catch_up(rec, run, i)
    _catch_up(rec, run, 6)
    for i in range(7, 11):
        _live(rec, run, i, volumes[i])
    rec.record_feedback("r1", 8, 0.8, _metrics(run, 8), volumes[8].timeline)
    return rec.finish()


def _table(path: Path) -> list[dict[str, str]]:
    lines = path.read_text().splitlines()
    cols = lines[0].split("\t")
    return [dict(zip(cols, line.split("\t"))) for line in lines[1:]]


def test_catch_up_metrics_are_in_the_confounds_and_marked(tmp_path: Path, synth_run: SynthRun) -> None:
    bold = _resumed_run(tmp_path, synth_run)
    deriv = tmp_path / "bids/derivatives/rtcontrol/sub-01/ses-01/func"
    confounds = _table(deriv / "sub-01_ses-01_task-nf_run-01_desc-confounds_timeseries.tsv")
    assert [int(r["volume"]) for r in confounds] == list(range(12))  # one row per volume, none twice
    sources = [r["result_source"] for r in confounds]
    assert sources == ["live"] * 5 + ["catch_up"] * 2 + ["live"] * 4 + ["n/a"]
    truth = np.asarray(synth_run.truth["motion"]["params"])
    for r in confounds[:11]:  # every volume with a result has its metrics, catch-up or live
        i = int(r["volume"])
        assert float(r["tx"]) == pytest.approx(truth[i, 0], abs=1e-6)
        assert float(r["roi_mean"]) == 100.0 + i and float(r["feedback"]) == pytest.approx(i / 10)
        assert r["framewise_displacement"] != "n/a"
    assert confounds[11]["tx"] == confounds[11]["feedback"] == confounds[11]["roi_mean"] == "n/a"
    sidecar = json.loads((deriv / "sub-01_ses-01_task-nf_run-01_desc-confounds_timeseries.json").read_text())
    assert set(sidecar["result_source"]["Levels"]) == {"live", "catch_up", "n/a"}
    assert "never shown" in sidecar["result_source"]["Levels"]["catch_up"]

    # events.tsv: only what the subject was shown, each once
    events = _table(bold.parent / "sub-01_ses-01_task-nf_run-01_events.tsv")
    shown = sorted(int(r["volume"]) for r in events if r["trial_type"] == "feedback")
    assert shown == [0, 1, 2, 3, 4, 7, 8, 9, 10]

    # the timeline has the catch-up's worker stamps for the volumes whose result is catch-up
    timeline = _table(deriv / "sub-01_ses-01_task-nf_run-01_desc-timeline_timeseries.tsv")
    assert timeline[5]["result_ready"] != "n/a" and timeline[6]["result_ready"] != "n/a"
    assert timeline[11]["result_ready"] == "n/a"

    runlog = json.loads((deriv / "sub-01_ses-01_task-nf_run-01_desc-runlog.json").read_text())
    assert runlog["results"]["live"] == 9
    assert runlog["results"]["catch_up_only"] == [5, 6] and runlog["results"]["none"] == [11]
    assert runlog["results"]["catch_up_also_shown_live"] == [0, 1, 2, 3, 4]
    assert runlog["results"]["repeated_live_records_ignored"] == [8]
    assert runlog["results"]["repeated_catch_up_records_replaced"] == [6]


def test_the_live_result_stands_where_both_exist(tmp_path: Path, synth_run: SynthRun) -> None:
    rec = Recorder(tmp_path / "run", run_settings())
    v = synth_run.to_volume(0, run="r1")
    rec.record_volume(v)
    rec.record_feedback("r1", 0, 1.5, {"roi_mean": 1.0}, v.timeline)
    rec.record_event("catch_up_feedback", "catch-up", index=0, feedback=2.5, metrics={"roi_mean": 2.0}, timeline={})
    rec.close()
    results = run_results(read_journal(tmp_path / "run"))
    assert results.by_index[0].source == "live" and results.by_index[0].feedback == 1.5
    assert results.by_index[0].metrics == {"roi_mean": 1.0} and results.catch_up_and_live == [0]
