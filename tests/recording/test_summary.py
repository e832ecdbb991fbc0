"""The pure end-of-run summary: what counts as missing, delivered and late, and a summary.json any JSON reader takes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtcontrol.recording.summary import SUMMARY_JSON, summarize, write


def _summary(**kw):
    base = dict(run="r", reason="stopped", tr=1.0, expected_volumes=0, fd_threshold=0.5, received=[],
                timelines={}, feedback={}, metrics={}, outcomes=None)
    return summarize(**{**base, **kw})


def test_missing_counts_to_the_last_expected_volume_and_to_the_last_received_one() -> None:
    assert _summary(received=[0, 1, 3, 6]).missing == [2, 4, 5]
    assert _summary(received=[0, 1, 3], expected_volumes=6).missing == [2, 4, 5]  # the tail that never came
    assert _summary(received=[]).missing == [] and _summary(received=[], expected_volumes=2).missing == [0, 1]


def test_only_a_confirmed_take_is_delivered_and_every_other_value_says_why() -> None:
    s = _summary(received=range(6), feedback={0: None, 1: 0.1, 2: 0.2, 3: 0.3, 4: {"value": 0.4}, 5: "go"},
                 outcomes={1: "delivered", 2: "no_consumer", 3: "scheduled", 4: "dropped"})
    assert s.outcomes == {"delivered": [1], "no_consumer": [2], "dropped": [4], "cancelled": [],
                          "unconfirmed": [3, 5]}
    assert (s.feedback_values, s.feedback_computed, s.delivered) == (5, 6, 1)
    assert _summary(feedback={1: 0.1}).outcomes is None  # no subject agent: nothing is claimed


def test_latency_fd_and_a_json_without_nan(tmp_path: Path) -> None:
    timelines = {i: {"file_seen": 10.0 + i, "parsed": 10.0 + i + 0.002 * (i + 1)} for i in range(100)}
    s = _summary(received=range(100), timelines=timelines, metrics={"fd": {1: 0.2, 2: 0.7, 3: 0.5, 4: 1.1}})
    assert s.latency_ms["file_to_feedback"]["n"] == 0 and s.latency_ms["ingest"]["n"] == 0  # not both ends
    assert s.fd_max == 1.1 and s.fd_over == [2, 4]  # 0.5 is not over 0.5
    path = write(s, tmp_path)
    assert path == tmp_path / SUMMARY_JSON and [p.name for p in tmp_path.iterdir()] == [SUMMARY_JSON]

    def no_nan(token: str) -> None:
        raise AssertionError(f"{token} in summary.json")

    data = json.loads(path.read_text(), parse_constant=no_nan)
    assert data["latency_ms"]["wire"] == {"median": None, "p99": None, "n": 0}
    assert "curves" not in data and data["missing"] == []


def test_median_and_p99_of_a_stage() -> None:
    timelines = {i: {"file_complete": 0.0, "parsed": (i + 1) / 1000} for i in range(100)}  # 1..100 ms
    ingest = _summary(received=range(100), timelines=timelines).latency_ms["ingest"]
    assert ingest["n"] == 100 and ingest["median"] == pytest.approx(50.5) and ingest["p99"] == pytest.approx(99.01)
