"""The subject protocol without sockets: parsing, refusals and onset scheduling."""

from __future__ import annotations

import json

import pytest

from rtcontrol.subject import protocol as P


def test_feedback_round_trip() -> None:
    msg = P.decode(P.encode({"type": "feedback", "run": "r1", "index": 3, "value": {"value": 0.4, "text": "up"},
                             "timeline": {"parsed": 1.5}, "acquired": 1.0}), "test", P.CONSOLE_TO_AGENT)
    fb = P.parse_feedback(msg, "test")
    assert (fb.run, fb.index, fb.value, fb.timeline, fb.acquired, fb.late) == (
        "r1", 3, {"value": 0.4, "text": "up"}, {"parsed": 1.5}, 1.0, False)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b"\xff\xfe", "not UTF-8"),
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"type": "launch_missiles"}', "unknown message type 'launch_missiles'"),
        ('{"type": "feedback", "v": 9}', "protocol version 9"),
        ('{"type": "feedback", "value": NaN}', "NaN is not allowed"),
        ("x" * (P.MAX_FRAME_BYTES + 1), "over the 65536-byte limit"),
    ],
)
def test_decode_refuses_garbage_with_a_clear_message(raw, fragment) -> None:
    with pytest.raises(P.ProtocolError, match="where-it-came-from") as err:
        P.decode(raw, "where-it-came-from", P.CONSOLE_TO_AGENT)
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    "msg, fragment",
    [
        ({"run": "", "index": 0, "value": 1}, "non-empty string 'run'"),
        ({"run": "r", "index": -1, "value": 1}, "'index' >= 0"),
        ({"run": "r", "index": True, "value": 1}, "'index' >= 0"),
        ({"run": "r", "index": 0}, "has no 'value'"),
        ({"run": "r", "index": 0, "value": float("inf")}, "not a finite number"),
        ({"run": "r", "index": 0, "value": "x" * (P.MAX_VALUE_BYTES + 10)}, "over the"),
        ({"run": "r", "index": 0, "value": 1, "timeline": {"parsed": "soon"}}, "timeline"),
    ],
)
def test_bad_feedback_is_refused(msg, fragment) -> None:
    with pytest.raises(P.ProtocolError) as err:
        P.parse_feedback({"type": "feedback", **msg}, "here")
    assert fragment in str(err.value)


def _settings(**settings):
    return P.parse_run_settings({"type": "run_start", "run": "run-01", "settings": settings})


@pytest.mark.parametrize(
    "settings, fragment",
    [
        ({"onset": {"mode": "delay", "delay": -0.5}}, "negative"),
        ({"onset": {"mode": "delay", "delay": 45}}, "over the 30 s limit"),
        ({"onset": {"mode": "delay", "delay": "1s"}}, "must be a number"),
        ({"onset": {"mode": "tr"}}, "needs the TR"),
        ({"onset": {"mode": "tr"}, "tr": 0}, "TR must be a positive"),
        ({"onset": {"mode": "sometimes"}}, "not one of immediate, tr, delay"),
        ({"display": {"low": 1, "high": 0}}, "high > low"),
        ({"display": {"fill": 3}}, "should be a str"),
        ({"display": {"wobble": True}}, "unknown display settings wobble"),
    ],
)
def test_impossible_run_settings_are_refused(settings, fragment) -> None:
    with pytest.raises(P.ProtocolError) as err:
        _settings(**settings)
    assert "run run-01" in str(err.value) and fragment in str(err.value)


def test_run_settings_defaults_and_consumer_view() -> None:
    s = _settings(tr=2.0, onset="tr", display={"fill": "#ff0000", "high": 2.0}, extra={"condition": "up"})
    assert s.onset == P.Onset("tr", 2.0, 0.0)
    view = s.to_consumer()
    assert view["display"]["fill"] == "#ff0000" and view["display"]["high"] == 2.0
    assert view["extra"] == {"condition": "up"}
    json.dumps(view)  # consumers get plain JSON


def test_onset_times() -> None:
    immediate = P.Onset()
    assert P.onset_time(immediate, 10.0, 9.0, 0.0, 4) == 10.0
    delay = P.Onset("delay", 2.0, 1.5)
    assert P.onset_time(delay, 10.0, 9.0, None, 4) == pytest.approx(10.5)  # acquired + delay
    assert P.onset_time(delay, 9.0, None, 1.0, 4) == pytest.approx(10.5)  # estimated t0 + 4 TR = 9, + 1.5
    assert P.onset_time(delay, 12.0, 9.0, None, 4) == 12.0  # already past: at once
    tr = P.Onset("tr", 2.0)
    assert P.onset_time(tr, 10.3, 9.0, None, 4) == pytest.approx(11.0)  # next boundary after acquisition
    assert P.onset_time(tr, 10.3, None, 0.0, 4) == pytest.approx(12.0)  # boundaries from run start (t0+8 ref)
    assert P.onset_time(tr, 11.0, 9.0, None, 4) == pytest.approx(11.0)  # exactly on a boundary


def test_the_consoles_next_tr_and_the_wire_word_tr_are_one_onset_mode() -> None:
    """The console's setting word and the protocol's word name the same member: no table between them."""
    assert P.OnsetMode("next_tr") is P.OnsetMode.NEXT_TR is P.OnsetMode("tr")
    assert json.dumps({"mode": P.OnsetMode("next_tr")}) == '{"mode": "tr"}'  # what goes on the wire
    assert _settings(tr=2.0, onset="next_tr").onset == _settings(tr=2.0, onset="tr").onset
    assert _settings(tr=2.0, onset="next_tr").to_consumer()["onset"]["mode"] == "tr"  # stimulus programs see "tr"
