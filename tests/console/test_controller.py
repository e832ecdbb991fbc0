"""The controller under plain asyncio, with the real watcher, a real subject agent over TLS and the recorder."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from rtcontrol.console import events as ev
from rtcontrol.console import settings as S
from rtcontrol.console.controller import ConsoleController
from rtcontrol.console.session import ConsoleSession
from tests.support.console import VOLUMES, scan_into
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(60)


def _settings(watch: Path, **run: object) -> S.RunSettings:
    s = S.RunSettings()
    values = {"tr": 0.5, "watch_folder": str(watch), **run}
    return replace(s, run=replace(s.run, **values)).validate()


@pytest.mark.parametrize("polling", [False, True], ids=["file-events", "polling"])
async def test_watch_folder_to_model_in_order_none_lost(tmp_path: Path, synth_series: Path, polling: bool) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    c = ConsoleController(_settings(watch, expected_volumes=VOLUMES, polling=polling), runs_dir=tmp_path / "runs")
    seen: list[ev.VolumeArrived] = []
    c.events.subscribe(lambda e: seen.append(e) if isinstance(e, ev.VolumeArrived) else None)
    run_id = await c.start_run()
    assert c.state == ev.RUNNING
    await scan_into(synth_series, watch)
    ended = await c.wait_ended(timeout=20)
    assert ended is not None and ended.reason == f"all {VOLUMES} volumes arrived"
    assert [e.volume.index for e in seen] == list(range(VOLUMES))
    assert all(e.volume.run == run_id for e in seen)
    assert c.model.volumes == VOLUMES and c.model.latest is not None
    assert c.model.latest.shape == (32, 32, 12)
    # every volume carries the watcher's stamps and the model holds them
    assert all(e.volume.timeline.get("file_seen") is not None for e in seen)
    assert (c.model.latency_ms("parsed") >= 0).all()
    # the settings were saved with the run and read back the same
    assert S.load(tmp_path / "runs" / run_id / "run.toml") == c.settings
    assert c.state == ev.ENDED


async def test_run_ends_after_silence(tmp_path: Path, synth_series: Path) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    c = ConsoleController(_settings(watch, tr=0.2, end_after_trs=2.0), runs_dir=tmp_path / "runs")
    await c.start_run()
    await scan_into(synth_series, watch, interval=0.02)
    ended = await c.wait_ended(timeout=20)
    assert ended is not None and "no volume for 2 TRs" in ended.reason
    assert ended.volumes == VOLUMES


async def test_missing_watch_folder_is_a_clear_error(tmp_path: Path) -> None:
    c = ConsoleController(_settings(tmp_path / "absent"), runs_dir=tmp_path / "runs")
    with pytest.raises(S.SettingsError, match="does not exist"):
        await c.start_run()
    assert c.state == ev.IDLE


async def test_run_end_to_end_with_worker_and_subject_agent(tmp_path: Path, synth_series: Path) -> None:
    """Embedded worker (template project) and subject agent over TLS: every volume analysed and delivered."""
    watch = tmp_path / "watch"
    watch.mkdir()
    settings = _settings(watch, expected_volumes=VOLUMES)
    settings = replace(settings, project=S.ProjectSection("template", {"baseline": 2}))
    session = ConsoleSession(settings, runs_dir=tmp_path / "runs", worker_options={"in_process": True})
    c = session.controller
    seen: dict[type, list] = {ev.FeedbackArrived: [], ev.Delivered: [], ev.ConnectionChanged: [], ev.LogMessage: []}
    c.events.subscribe(lambda e: seen[type(e)].append(e) if type(e) in seen else None)
    await session.open()
    try:
        assert c.worker is not None, [m.text for m in seen[ev.LogMessage]]
        assert c.subject is not None, [m.text for m in seen[ev.LogMessage]]
        connected = {s.name for s in seen[ev.ConnectionChanged] if s.state == "connected" and s.fingerprint}
        assert connected == {"worker", "subject"}
        projects = await c.list_projects()
        assert "template" in [p["name"] for p in projects]
        declared = await c.project_settings("template")
        assert {d["name"] for d in declared} >= {"baseline", "scale"}
        run_id = await session.start_run()
        await scan_into(synth_series, watch)
        ended = await c.wait_ended(timeout=30)
        assert ended is not None and ended.reason == f"all {VOLUMES} volumes arrived", ended
        feedback = seen[ev.FeedbackArrived]
        assert sorted(f.index for f in feedback) == list(range(VOLUMES))
        assert all(f.run == run_id for f in feedback)
        assert [f.value for f in feedback[:2]] == [None, None]  # the template's baseline gives no feedback
        delivered = seen[ev.Delivered]
        assert sorted({d.index for d in delivered}) == list(range(2, VOLUMES))
        # the whole path is stamped in the console's clock, in order
        for i in range(2, VOLUMES):
            tl = c.model.timeline(i)
            order = [tl.get(s) for s in ("file_seen", "parsed", "sent", "feedback_received", "subject_delivered")]
            assert None not in order, (i, tl.stamps)
            assert order == sorted(order), (i, tl.stamps)
        assert not [m.text for m in seen[ev.LogMessage] if m.level == "error"]
    finally:
        await session.close()


async def test_two_runs_in_one_session_with_the_simulated_scanner(tmp_path: Path) -> None:
    """Start, end, Next run, start again: each run gets its own folder, recording and worker run."""
    # end_after_trs: the simulated scanner stalls for a second or more on a busy machine; at TR 0.1 s the default
    # (10 TRs) ended the run there (the console's rule is right: no volume for 10 TRs), not what this test is about
    s = S.default_settings().with_values("run", tr=0.1, expected_volumes=6, end_after_trs=300)
    s = s.with_values("project", name="template", settings={"baseline": 1})
    session = ConsoleSession(s, demo=True, demo_volumes=6, runs_dir=tmp_path / "runs",
                             worker_options={"in_process": True})
    c = session.controller
    await session.open()
    try:
        first = await session.start_run()
        ended = await c.wait_ended(timeout=30)
        assert ended is not None and ended.volumes == 6 and ended.feedback == 6, ended
        second = await session.start_run(c.settings.next_run())
        assert second != first and second.endswith("run-02")
        ended = await c.wait_ended(timeout=30)
        assert ended is not None and ended.run == second and ended.volumes == 6 and ended.feedback == 6, ended
        assert c.model.at_agent == 5  # at the embedded agent; no stimulus program was connected to take them
        assert c.model.delivered == 0 and c.model.undelivered() == {"no_consumer": [1, 2, 3, 4, 5]}
        # the same number again: the simulated scanner takes the next free one instead of mixing recordings
        third = await session.start_run(c.settings)
        assert third.endswith("run-03")
        await c.wait_ended(timeout=30)
    finally:
        await session.close()
    runs = tmp_path / "runs"
    assert (runs / first / "run.toml").is_file() and (runs / second / "run.toml").is_file()
    assert len(list((runs / "bids").rglob("*_bold.nii.gz"))) == 3


async def test_stop_mid_run_loses_nothing_in_flight(tmp_path: Path) -> None:
    """The operator stops while volumes are on their way: every volume that arrived is analysed and its
    feedback reaches the subject agent before the run is declared over."""
    # end_after_trs: a stall of the simulated scanner on a busy machine must not end the run before the operator
    # stops it (at TR 0.1 s the default 10 TRs is 1 s; the run ended after 1 volume under load)
    s = S.default_settings().with_values("run", tr=0.1, expected_volumes=40, end_after_trs=300)
    s = s.with_values("project", name="template", settings={"baseline": 1})
    session = ConsoleSession(s, demo=True, demo_volumes=40, runs_dir=tmp_path / "runs",
                             worker_options={"in_process": True})
    c = session.controller
    await session.open()
    try:
        await session.start_run()
        # the simulated scanner first writes its synthetic run: on a busy machine the first volume may take a while
        await wait_until(lambda: c.model.volumes >= 8, timeout=45, what=lambda: f"8 volumes (got {c.model.volumes})")
        ended = await c.stop_run()
        assert ended is not None and ended.reason == "stopped by the operator"
        assert 8 <= ended.volumes < 40
        assert ended.feedback == ended.volumes
        assert c.model.at_agent == ended.volumes - 1  # the template's one-volume baseline has no feedback
    finally:
        await session.close()


async def test_a_recorded_run_number_is_refused(tmp_path: Path, synth_series: Path) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    s = _settings(watch, expected_volumes=2)
    (tmp_path / "runs" / s.run_id).mkdir(parents=True)
    c = ConsoleController(s, runs_dir=tmp_path / "runs")
    with pytest.raises(S.SettingsError, match="already recorded.*Next run"):
        await c.start_run()
    assert c.state == ev.IDLE
    run_id = await c.start_run(s.next_run())
    assert run_id.endswith("run-02")
    await c.stop_run()


async def test_a_saved_run_holds_no_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tokens stay with the operator (settings file, command line, environment), never in a run's record."""
    import argparse

    from rtcontrol.console import options

    watch = tmp_path / "watch"
    watch.mkdir()
    s = _settings(watch)
    s = replace(s, worker=replace(s.worker, url="wss://worker.example:8765", token="w-SECRET-1234"),
                subject=replace(s.subject, token="s-SECRET-5678"))
    c = ConsoleController(s, runs_dir=tmp_path / "runs", record=False)
    run_id = await c.start_run()
    await c.stop_run()
    saved = tmp_path / "runs" / run_id / "run.toml"
    text = saved.read_text()
    assert "SECRET" not in text and "w-SECRET-1234" not in text
    assert c.settings.worker.token == "w-SECRET-1234"  # the live run still has it
    # the record loads back, and the token comes from the command line or the environment
    loaded = S.load(saved)
    assert loaded.worker.url == "wss://worker.example:8765" and loaded.worker.token == ""
    parser = argparse.ArgumentParser()
    options.add_arguments(parser)
    monkeypatch.setenv(options.WORKER_TOKEN_ENV, "from-env")
    monkeypatch.delenv(options.SUBJECT_TOKEN_ENV, raising=False)
    again = options.settings_from_args(parser.parse_args(["--settings", str(saved), "--subject-token", "from-flag"]))
    assert again.worker.token == "from-env" and again.subject.token == "from-flag"
    assert again.without_secrets() == loaded


def _unwritable(tmp_path: Path) -> Path:
    """A runs folder that cannot be written: a read-only folder, or /sys when running as root."""
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root ignores permissions: a read-only file system instead
        if not Path("/sys/kernel").is_dir():
            pytest.skip("running as root and no read-only file system (/sys) to test with")
        return Path("/sys/kernel/rtcontrol-runs")
    return locked / "runs"


@pytest.mark.parametrize("target", ["read-only", "full"])
async def test_a_run_that_cannot_be_recorded_is_refused_whole(tmp_path: Path, target: str) -> None:
    from rtcontrol.recording import RecordingError

    watch = tmp_path / "watch"
    watch.mkdir()
    if target == "read-only":
        runs, s = _unwritable(tmp_path), _settings(watch, expected_volumes=100)
    else:  # more volumes than any disk holds: the room check refuses, as on a full disk
        runs, s = tmp_path / "runs", _settings(watch, expected_volumes=10**9)
    c = ConsoleController(s, runs_dir=runs)
    logged: list[ev.LogMessage] = []
    states: list[ev.StateChanged] = []
    c.events.subscribe(lambda e: logged.append(e) if isinstance(e, ev.LogMessage) else None)
    c.events.subscribe(lambda e: states.append(e) if isinstance(e, ev.StateChanged) else None)
    match = "cannot write to" if target == "read-only" else r"only \d+ MB free, and this run needs about"
    with pytest.raises(RecordingError, match=match):
        await c.start_run()
    # nothing half-started: no state change, no watcher or tasks, no run folder, the reason in the log
    assert c.state == ev.IDLE and not states and c._watcher is None and not c._tasks
    assert not (runs / s.run_id).exists()
    errors = [m.text for m in logged if m.level == "error"]
    assert len(errors) == 1 and errors[0].startswith(f"run {s.run_id} not started:") and str(runs) in errors[0]
    # with room and a writable folder the same controller starts
    if target == "full":
        c.settings = _settings(watch, expected_volumes=10)
        await c.start_run()
        assert c.state == ev.RUNNING
        await c.stop_run()


async def test_a_run_stopped_before_any_volume_leaves_nothing_to_finish(tmp_path: Path, synth_series: Path) -> None:
    """Stop before the scanner sent anything: no error, no empty 'interrupted' run offered at the next start,
    and the run number can be used again."""
    watch = tmp_path / "watch"
    watch.mkdir()
    c = ConsoleController(_settings(watch, expected_volumes=VOLUMES), runs_dir=tmp_path / "runs")
    logged: list[ev.LogMessage] = []
    c.events.subscribe(lambda e: logged.append(e) if isinstance(e, ev.LogMessage) else None)
    run_id = await c.start_run()
    assert c.recorder is not None and (tmp_path / "runs" / run_id).is_dir()
    ended = await c.stop_run()
    assert ended is not None and ended.volumes == 0
    assert not [m.text for m in logged if m.level == "error"]
    assert not (tmp_path / "runs" / run_id).exists()
    assert c.interrupted_runs() == []
    # the same run number records a real scan now
    assert await c.start_run() == run_id
    await scan_into(synth_series, watch)
    ended = await c.wait_ended(timeout=30)
    assert ended is not None and ended.volumes == VOLUMES
    assert (tmp_path / "runs" / "bids").is_dir() and c.interrupted_runs() == []


async def test_end_of_run_summary_names_every_missing_volume(tmp_path: Path, synth_series: Path) -> None:
    """Volumes 4 and 7 never reach the watch folder: the run's end warns, naming both indices."""
    from tests.support.console import series_files

    watch, source = tmp_path / "watch", tmp_path / "source"
    watch.mkdir()
    source.mkdir()
    for n, f in enumerate(series_files(synth_series)):
        if n not in (4, 7):
            (source / f.name).symlink_to(f)
    c = ConsoleController(_settings(watch, tr=0.2, end_after_trs=3.0), runs_dir=tmp_path / "runs")
    logged: list[ev.LogMessage] = []
    c.events.subscribe(lambda e: logged.append(e) if isinstance(e, ev.LogMessage) else None)
    await c.start_run()
    await scan_into(source, watch, interval=0.05)
    ended = await c.wait_ended(timeout=20)
    assert ended is not None and ended.volumes == VOLUMES - 2
    ends = [m for m in logged if "volumes received" in m.text]
    assert len(ends) == 1 and ends[0].level == "warning" and ends[0].text.endswith("missing: volumes 4, 7"), ends
