"""The catch-up rule after a worker restart, and reading a run's volumes back from its recording."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rtcontrol.console.resume import CatchUp, recorded_volumes, spans
from rtcontrol.link.codec import encode_volume
from rtcontrol.recording.recorder import Recorder
from tests.support.worker import make_volume


def feed(rule: CatchUp, indices: range | list[int]) -> list[bool]:
    return [rule.is_catch_up(i) for i in indices]


def test_without_a_restart_every_feedback_is_live_even_late() -> None:
    rule = CatchUp()
    for i in range(5):
        rule.arrived(i)
    assert feed(rule, range(5)) == [False] * 5  # a slow project's feedback is late, not catch-up
    assert rule.reports == [] and rule.unfinished() is None


def test_replayed_volumes_are_catch_up_until_the_worker_is_level_with_the_scanner() -> None:
    rule = CatchUp()
    for i in range(8):
        rule.arrived(i)
    assert feed(rule, range(6)) == [False] * 6  # the first worker answered 0..5 live, then died
    rule.arrived(8)
    rule.arrived(9)  # arrived while it was down
    assert rule.restart() == 10  # N: the console has volumes 0..9
    assert feed(rule, range(9)) == [True] * 9  # replayed: older than the newest arrived (9)
    rule.arrived(10)  # the scanner goes on during the replay
    rule.arrived(11)
    assert feed(rule, [9, 10]) == [True, True]  # still behind the scanner: too late to show
    assert rule.is_catch_up(11) is False  # level with the scanner: live again
    rule.arrived(12)
    assert rule.is_catch_up(12) is False
    assert rule.reports == [
        "worker restarted at volume 10; run restarted there, volumes 0..9 replayed as catch-up (no feedback shown "
        "for 4 of them: 6..9); volume 10 arrived during the catch-up (feedback recorded, not shown); "
        "live again from volume 11"
    ]
    assert rule.answered == set(range(13)) and rule.shown == set(range(6)) | {11, 12}


def test_the_newest_replayed_volume_is_live_when_nothing_newer_arrived() -> None:
    rule = CatchUp()
    for i in range(4):
        rule.arrived(i)
    feed(rule, range(4))
    rule.restart()
    assert feed(rule, range(4)) == [True, True, True, False]
    assert rule.reports == ["worker restarted at volume 4; run restarted there, volumes 0..3 replayed as catch-up "
                            "(no feedback shown for 0 of them); live again from volume 3"]


def test_the_volume_that_goes_live_again_is_not_said_to_be_unshown() -> None:
    rule = CatchUp()
    for i in range(8):
        rule.arrived(i)
    feed(rule, range(6))  # 6 and 7 arrived, then the worker died before answering them
    assert rule.restart() == 8
    assert feed(rule, range(8)) == [True] * 7 + [False]  # 7 is the newest: its feedback is shown live
    assert rule.reports == ["worker restarted at volume 8; run restarted there, volumes 0..7 replayed as catch-up "
                            "(no feedback shown for 1 of them: 6); live again from volume 7"]


def test_a_restart_that_never_caught_up_is_said_at_the_end() -> None:
    rule = CatchUp()
    for i in range(3):
        rule.arrived(i)
    rule.restart()
    rule.arrived(3)
    assert feed(rule, range(3)) == [True] * 3
    report = rule.unfinished()
    assert report == ("worker restarted at volume 3; run restarted there, volumes 0..2 replayed as catch-up (no "
                      "feedback shown for 3 of them: 0..2); not caught up yet: feedback for 3 volume(s) was catch-up, "
                      "none live since")
    assert rule.reports == [report] and rule.unfinished() is None


def test_a_second_restart_before_catching_up_keeps_the_first_said() -> None:
    rule = CatchUp()
    for i in range(3):
        rule.arrived(i)
    rule.restart()
    assert rule.is_catch_up(0) is True
    rule.arrived(3)
    assert rule.restart() == 4  # killed again while catching up
    assert feed(rule, range(4)) == [True, True, True, False]
    assert [r.split(";")[0] for r in rule.reports] == ["worker restarted at volume 3", "worker restarted at volume 4"]
    assert "not caught up yet: feedback for 1 volume(s) was catch-up" in rule.reports[0]
    assert rule.reports[1].endswith("live again from volume 3")


def test_a_restart_before_the_first_volume_replays_nothing() -> None:
    rule = CatchUp()
    assert rule.restart() == 0
    rule.arrived(0)
    assert rule.is_catch_up(0) is False
    assert rule.reports == ["worker restarted at volume 0; run restarted there, no volume to replay; "
                            "live again from volume 0"]


def test_spans() -> None:
    assert spans([]) == ""
    assert spans([5, 0, 1, 2, 7, 8, 2]) == "0..2, 5, 7, 8"


def test_recorded_volumes_come_back_as_they_were_sent(tmp_path: Path) -> None:
    """What the console replays to a restarted worker is byte for byte what it first sent."""
    rec = Recorder(tmp_path / "run", {"run": 1, "tr": 2.0})
    sent = []
    for i in range(4):
        v = make_volume(i, run="r1")
        v.scl_slope, v.scl_inter = 0.5, 3.0
        v.affine = np.array([[-2.5, 0.1, 0, 90], [0, 2.5, 0.2, -120], [0, 0, 3.3, -60], [0, 0, 0, 1]])
        rec.record_volume(v)
        sent.append(v)
    rec.drain()
    back = recorded_volumes(tmp_path / "run", "r1", [1, 3, 7])
    assert sorted(back) == [1, 3]  # 7 was never recorded: left out, so the caller can name it
    for i in (1, 3):
        assert encode_volume(back[i], i, run="r1") == encode_volume(sent[i], i, run="r1")
        assert back[i].timeline.get("parsed") == sent[i].timeline.get("parsed")
    assert recorded_volumes(tmp_path / "run", "another-run", [1]) == {}
    rec.close()


async def test_the_console_names_the_volumes_it_could_not_replay(tmp_path: Path) -> None:
    import pytest

    from rtcontrol.console import events as ev
    from rtcontrol.console import settings as S
    from rtcontrol.console.controller import ConsoleController

    c = ConsoleController(S.default_settings(), runs_dir=tmp_path, record=False)
    said: list[ev.LogMessage] = []
    c.events.subscribe(lambda e: said.append(e) if isinstance(e, ev.LogMessage) else None)
    with pytest.raises(LookupError, match="not being recorded"):  # no recording: nothing to replay from
        await c.recorded_volumes("run-x", [0, 1])
    c.worker_restarted("run-x", {"replayed": [3, 4], "lost": [0, 1, 2, 5], "why": "LookupError: not recorded",
                                 "data_dir": "/w/b_restart1", "previous_data_dir": "/w/a"})
    errors = [m.text for m in said if m.level == "error"]
    assert errors == ["volumes 0..2, 5 of run run-x could not be replayed to the restarted worker (LookupError: not "
                      "recorded): the project never saw them, so its state misses 4 volume(s)"]
    assert "3, 4" in said[0].text and "/w/b_restart1" in said[0].text and "/w/a" in said[0].text
