"""The run model and the lateness diagnostics, on real volumes from the synthetic scanner."""

from __future__ import annotations

import math

import numpy as np

from rtcontrol.console.diagnostics import Diagnostics
from rtcontrol.console.model import MOTION, RunModel, Series, feedback_number, volume_list
from rtcontrol.scanner.volume import Timeline, Volume


def _volume(index: int, value: float = 100.0) -> Volume:
    data = np.full((8, 8, 4), value, dtype=np.int16)
    v = Volume(data, np.diag([3.0, 3.0, 3.5, 1.0]), index=index, scl_slope=2.0)
    v.timeline.stamp("file_seen", 10.0 + index)
    return v


def test_series_grows_and_keeps_gaps_as_nan() -> None:
    s = Series(capacity=2)
    s.set(0, 1.0)
    s.set(5, 6.0)
    assert s.length == 6
    assert s.values()[0] == 1.0 and s.values()[5] == 6.0
    assert np.isnan(s.values()[1:5]).all()


def test_model_tracks_volumes_feedback_motion_and_latency() -> None:
    m = RunModel()
    m.reset("run-a")
    for i in range(3):
        m.add_volume(_volume(i, 100.0 + i), arrival=10.0 + i)
    assert m.volumes == 3
    assert m.global_mean.values().tolist() == [200.0, 202.0, 204.0]  # scl_slope applied
    tl = Timeline({"file_seen": 11.0, "result_ready": 11.004, "feedback_received": 11.005})
    metrics = {"tx": 0.1, "rz": -0.2, "fd": 0.3, "roi_mean": 512.0}
    m.add_feedback(1, {"value": 0.75, "label": "up"}, metrics, tl)
    assert m.feedback.get(1) == 0.75 and math.isnan(m.feedback.get(0))
    assert m.motion.get(1, MOTION.index("rz")) == -0.2
    assert m.metric("fd")[1] == 0.3 and m.metric("roi_mean")[1] == 512.0
    assert abs(m.latency_ms("feedback_received")[1] - 5.0) < 1e-6
    m.add_delivery(1, Timeline({"subject_delivered": 11.007}), "pending")
    assert (m.at_agent, m.delivered) == (1, 0)  # at the agent, not yet taken by a stimulus program
    m.add_delivery(1, Timeline({"subject_delivered": 11.007, "consumer_taken": 11.008, "displayed": 11.02}),
                   "delivered")
    m.add_delivery(1, Timeline({"subject_delivered": 11.007, "consumer_taken": 11.008}), "delivered")
    assert abs(m.latency_ms("subject_delivered")[1] - 7.0) < 1e-6
    assert (m.at_agent, m.delivered) == (1, 1)


def test_only_values_a_stimulus_program_took_count_as_delivered() -> None:
    """The agent's ack alone is not delivery: values nobody took are named, by why, in one sentence."""
    m = RunModel()
    m.reset("r")
    for i in range(10):
        m.add_feedback(i, 0.1 * i, {}, Timeline({"feedback_received": 1.0 + i}))
    m.add_feedback(10, None, {}, Timeline())  # no value (a baseline): nothing to deliver
    for i in range(10):
        stamps = {"subject_delivered": 2.0 + i}
        if i in (3, 4):
            m.add_delivery(i, Timeline(stamps), "no_consumer")
        elif i == 9:
            m.add_delivery(i, Timeline(stamps), "pending")  # the agent never said more
        else:
            m.add_delivery(i, Timeline({**stamps, "consumer_taken": 2.001 + i}), "delivered")
    m.add_delivery(7, Timeline({"subject_delivered": 9.0}), "dropped")  # a late word cannot undo a take
    assert (m.at_agent, m.delivered) == (10, 7)
    assert m.undelivered() == {"no_consumer": [3, 4], "unconfirmed": [9]}
    assert m.delivery_report() == (
        "7 of 10 feedback values reached a stimulus program; "
        "2 reached the subject agent with no stimulus program connected (volumes 3, 4); "
        "1 not confirmed by the subject agent as taken by a stimulus program (volume 9)")


def test_volume_lists_join_consecutive_runs() -> None:
    assert volume_list([3]) == "volume 3"
    assert volume_list([1, 2, 5, 6, 7, 8, 10]) == "volumes 1, 2, 5-8, 10"


def test_feedback_number_of_shorthand_values() -> None:
    assert feedback_number(0.5) == 0.5
    assert feedback_number({"value": 2}) == 2.0
    assert feedback_number({"label": "x", "level": 3}) == 3.0
    assert feedback_number("text") is None


def test_scanner_late_warns_once_per_stall() -> None:
    d = Diagnostics(tr=1.0)
    assert d.check_scanner(0.0) is None  # nothing arrived yet
    d.volume_arrived(10.0)
    assert d.check_scanner(11.2) is None
    late = d.check_scanner(11.6)
    assert late is not None and late.kind == "scanner" and "1.6 s" in late.message
    assert d.check_scanner(12.5) is None  # already warned for this stall
    d.volume_arrived(13.0)
    assert d.check_scanner(14.6) is not None
    assert d.scanner_late_count == 2


def test_analysis_late_when_feedback_takes_longer_than_tr() -> None:
    d = Diagnostics(tr=0.5)
    assert d.check_analysis(3, Timeline({"file_seen": 1.0, "feedback_received": 1.2})) is None
    late = d.check_analysis(4, Timeline({"file_seen": 1.0, "feedback_received": 1.8}))
    assert late is not None and late.index == 4 and "0.80 s" in late.message


def test_late_feedback_blames_a_slow_file_on_the_scanner_not_the_analysis() -> None:
    """The file took 1 s to be written (a slow export or copy); the analysis took 40 ms."""
    d = Diagnostics(tr=1.0)
    stamps = {"file_seen": 0.0, "file_complete": 1.0, "parsed": 1.01, "sent": 1.011, "worker_received": 1.02,
              "result_ready": 1.06, "feedback_received": 1.07}
    late = d.check_analysis(5, Timeline(stamps))
    assert late is not None and late.kind == "scanner" and "written or copied" in late.message
    assert "analysis was not slow" in late.message and d.analysis_late_count == 0
    slow_worker = dict(stamps, file_complete=0.01, parsed=0.02, sent=0.021, worker_received=0.03)
    late = d.check_analysis(6, Timeline(slow_worker))
    assert late is not None and late.kind == "analysis" and d.analysis_late_count == 1
