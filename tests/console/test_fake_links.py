"""The controller's run rules with in-memory fakes of its ports (``fakes.py``): order, teardown and
empty runs, in milliseconds. What the real parts do over sockets is tested in their own folders and in
``test_controller.py``; here it is the controller's own logic."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from rtcontrol.console import events as ev
from rtcontrol.console import settings as S
from rtcontrol.console.controller import ConsoleController
from rtcontrol.scanner.volume import Volume

from .fakes import FakeRecorder, FakeSubject, FakeWatcher, FakeWorker, Journal, Rig, volume

pytestmark = pytest.mark.timeout(20)


def _rig(tmp_path: Path, refuse: Exception | None = None, fail_on: str = "", **run: object) -> Rig:
    watch = tmp_path / "watch"
    watch.mkdir(exist_ok=True)
    s = S.RunSettings()
    s = replace(s, run=replace(s.run, **{"tr": 0.5, "watch_folder": str(watch), "end_after_trs": 1000.0, **run}))
    s = replace(s, feedback=replace(s.feedback, onset="next_tr")).validate()
    journal: Journal = []
    recorder = FakeRecorder(journal, fail_on=fail_on)
    watchers: list[FakeWatcher] = []

    def make_watcher(folder: Path, on_volume: Callable[[Volume], Any], on_event: Callable[[Any], Any]) -> FakeWatcher:
        watchers.append(FakeWatcher(journal, on_volume, on_event))
        return watchers[-1]

    c = ConsoleController(s, runs_dir=tmp_path / "runs", watcher_factory=make_watcher,
                          recorder_factory=lambda settings, run_dir, on_error: recorder)
    worker, subject = FakeWorker(c, journal, refuse), FakeSubject(journal)
    c.attach_worker(worker)
    c.attach_subject(subject)
    return Rig(c, journal, worker, subject, recorder, watchers)


async def _settle(rig: Rig, feedback: int) -> None:
    """Until the subject has ``feedback`` values (bounded: 200 passes of the loop)."""
    for _ in range(200):
        if len(rig.names("subject.feedback")) >= feedback:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"the subject got {rig.names('subject.feedback')}, not {feedback} values")


async def test_volumes_reach_the_worker_and_feedback_the_subject_in_order(tmp_path: Path) -> None:
    rig = _rig(tmp_path)
    run = await rig.controller.start_run()
    assert rig.journal[:3] == [("watcher.start",), ("worker.start_run", run), ("subject.start_run", run, "next_tr")]
    for i in range(6):
        rig.watcher.feed(volume(i))
    await _settle(rig, 6)
    assert [e[1] for e in rig.names("worker.volume")] == list(range(6))
    assert rig.names("subject.feedback") == [("subject.feedback", i, float(i)) for i in range(6)]
    for i in range(6):  # each value goes to the subject only after its volume went to the worker
        assert rig.journal.index(("worker.volume", i)) < rig.journal.index(("subject.feedback", i, float(i)))
    assert [e[1] for e in rig.names("recorder.record_volume")] == list(range(6))
    ended = await rig.controller.stop_run()
    assert ended is not None and (ended.volumes, ended.feedback) == (6, 6)


async def test_teardown_goes_in_data_order_and_loses_what_the_watcher_held_nothing(tmp_path: Path) -> None:
    rig = _rig(tmp_path)
    await rig.controller.start_run()
    rig.watcher.feed(volume(0))
    rig.watcher.held = [volume(1), volume(2)]  # files still being read when the operator stops
    ended = await rig.controller.stop_run()
    assert ended is not None and (ended.volumes, ended.feedback) == (3, 3)
    order = [e[0] for e in rig.journal if e[0] in ("watcher.stop", "worker.stop_run", "subject.stop_run",
                                                   "recorder.afinish")]
    assert order == ["watcher.stop", "worker.stop_run", "subject.stop_run", "recorder.afinish"]
    stop = rig.journal.index(("worker.stop_run",))
    assert {("worker.volume", 1), ("worker.volume", 2)} <= set(rig.journal[:stop])  # held volumes went first
    subject_stop = rig.journal.index(("subject.stop_run",))
    assert ("subject.feedback", 2, 2.0) in rig.journal[:subject_stop]  # and their feedback reached the subject
    assert rig.controller.state == ev.ENDED
    rig.watcher.feed(volume(3))  # after the run: not taken
    await asyncio.sleep(0.01)
    assert ("worker.volume", 3) not in rig.journal


async def test_a_run_without_volumes_is_discarded_and_its_number_stays_free(tmp_path: Path) -> None:
    rig = _rig(tmp_path)
    run = await rig.controller.start_run()
    assert (tmp_path / "runs" / run).is_dir()
    ended = await rig.controller.stop_run()
    assert ended is not None and ended.volumes == 0
    assert ("recorder.close",) in rig.journal and ("recorder.afinish",) not in rig.journal
    assert not (tmp_path / "runs" / run).exists()
    assert ("worker.stop_run",) in rig.journal and ("subject.stop_run",) in rig.journal
    assert await rig.controller.start_run() == run  # the same run number again
    await rig.controller.stop_run()


async def test_a_worker_that_refuses_the_run_ends_it_cleanly(tmp_path: Path) -> None:
    rig = _rig(tmp_path, refuse=RuntimeError("no project named fake"))
    with pytest.raises(RuntimeError, match="no project named fake"):
        await rig.controller.start_run()
    assert rig.controller.state == ev.ENDED and not rig.controller.running
    assert ("watcher.stop",) in rig.journal
    assert not rig.names("subject.start_run")  # the subject is not told about a run that never started
    assert "worker refused" in (rig.controller.last_ended.reason if rig.controller.last_ended else "")


async def test_a_failing_recorder_is_switched_off_and_the_run_goes_on(tmp_path: Path) -> None:
    rig = _rig(tmp_path, fail_on="record_volume")
    logs: list[ev.LogMessage] = []
    rig.controller.events.subscribe(lambda e: logs.append(e) if isinstance(e, ev.LogMessage) else None)
    await rig.controller.start_run()
    for i in range(3):
        rig.watcher.feed(volume(i))
    await _settle(rig, 3)
    assert [e[1] for e in rig.names("worker.volume")] == [0, 1, 2]
    failed = [m.text for m in logs if m.source == "recording" and m.level == "error"]
    assert len(failed) == 1 and "disk full" in failed[0] and "recording is off" in failed[0]
    assert rig.controller.recorder is None
    await rig.controller.stop_run()


async def test_responses_reach_the_worker_only_during_a_run(tmp_path: Path) -> None:
    rig = _rig(tmp_path)
    rig.controller.handle_response({"consumer": "button box", "t": 1.0, "data": "before"})
    await rig.controller.start_run()
    rig.controller.handle_response({"consumer": "button box", "t": 2.0, "data": "during"})
    await asyncio.sleep(0)
    await rig.controller.stop_run()
    rig.controller.handle_response({"consumer": "button box", "t": 3.0, "data": "after"})
    await asyncio.sleep(0)
    assert [r["data"] for r in rig.worker.responses] == ["during"]
    assert ("recorder.record_response", "during") in rig.journal


async def test_close_stops_the_run_and_closes_every_link(tmp_path: Path) -> None:
    rig = _rig(tmp_path)
    await rig.controller.start_run()
    rig.watcher.feed(volume(0))
    await rig.controller.close()
    assert rig.controller.state == ev.ENDED
    assert rig.journal[-2:] == [("worker.close",), ("subject.close",)]
