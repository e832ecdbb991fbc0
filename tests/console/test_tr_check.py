"""A run's TR in the settings that differs from the scanner's: said on the first volume, and the run uses one."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from rtcontrol.console import events as ev
from rtcontrol.console import settings as S
from rtcontrol.console.headless import run_session
from rtcontrol.console.session import ConsoleSession
from rtcontrol.console.tr_check import choose_tr
from tests.support.console import scan_into

pytestmark = pytest.mark.timeout(120)

#: A project whose feedback is the TR it was given (ctx.tr) for each volume.
_TR_PROJECT = '''
from rtcontrol.project import Project

class ReportTr(Project):
    name = "report_tr"
    def process(self, volume, ctx):
        return {"ctx_tr": ctx.tr, "volume_tr": volume.tr}
'''


def test_choose_tr_says_which_one_the_project_gets() -> None:
    same = choose_tr(1.0, 1.002, "scanner", "/x/f1.dcm")
    assert same.message is None and same.tr == pytest.approx(1.002)
    assert choose_tr(2.0, None).tr == 2.0 and choose_tr(2.0, None).message is None
    c = choose_tr(2.0, 1.0, "scanner", "/x/f1.dcm")
    assert c.tr == 1.0
    assert c.message == "settings TR 2 s differs from the scanner's 1 s (headers of f1.dcm); the project gets 1 s"
    c = choose_tr(2.0, 1.0, "settings", "/x/f1.dcm")
    assert c.tr == 2.0 and "the project gets 2 s ([run] tr_source = \"settings\")" in (c.message or "")


def test_tr_source_is_checked() -> None:
    with pytest.raises(S.SettingsError, match="tr_source"):
        S.RunSettings().with_values("run", tr_source="header")


@pytest.mark.parametrize("source", ["scanner", "settings"])
async def test_settings_tr_differing_from_the_headers_is_reported_and_the_project_gets_one(
        tmp_path: Path, dicom_root: Path, source: str) -> None:
    """siemens_xa60_enhanced_sms2 (TR 1.23 s in its headers) with the settings saying 2 s, through the real
    watcher, an in-process worker running a project and the `run --no-gui` printer."""
    series = dicom_root / "siemens_xa60_enhanced_sms2"
    project = tmp_path / "projects" / "report_tr"
    project.mkdir(parents=True)
    (project / "project.py").write_text(_TR_PROJECT)
    watch = tmp_path / "watch"
    watch.mkdir()
    s = S.RunSettings().with_values("run", tr=2.0, tr_source=source, watch_folder=str(watch), expected_volumes=3)
    s = s.with_values("project", name="report_tr")
    session = ConsoleSession(s, runs_dir=tmp_path / "runs",
                             worker_options={"in_process": True, "projects": [tmp_path / "projects"]})
    feedback: list[ev.FeedbackArrived] = []
    session.controller.events.subscribe(lambda e: feedback.append(e) if isinstance(e, ev.FeedbackArrived) else None)

    async def scanner() -> None:
        while session.controller.state != ev.RUNNING or session.controller.worker is None:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        await scan_into(series, watch, interval=0.2)

    out = io.StringIO()
    feeding = asyncio.create_task(scanner())
    status = await asyncio.wait_for(run_session(session, out=out), 90)
    await feeding
    text = out.getvalue()
    first = sorted(p.name for p in series.iterdir() if p.is_file() and p.suffix != ".json")[0]
    expected_tr = 2.0 if source == "settings" else 1.23
    why = ' ([run] tr_source = "settings")' if source == "settings" else ""
    line = (f"settings TR 2 s differs from the scanner's 1.23 s (headers of {first}); "
            f"the project gets {expected_tr:g} s{why}")
    assert text.count(line) == 1, text
    assert status == 0, text
    assert len(feedback) == 3, text
    for f in feedback:
        assert f.value == {"ctx_tr": pytest.approx(expected_tr), "volume_tr": pytest.approx(expected_tr)}, f.value


async def test_the_run_ends_on_silence_counted_in_the_runs_tr(tmp_path: Path, dicom_root: Path) -> None:
    """Settings TR 5 s, headers 1.23 s: "no volume for 2 TRs" is 2.5 s of silence, not 10 s."""
    import time

    from rtcontrol.console.controller import ConsoleController

    watch = tmp_path / "watch"
    watch.mkdir()
    s = S.RunSettings().with_values("run", tr=5.0, end_after_trs=2.0, watch_folder=str(watch))
    c = ConsoleController(s, runs_dir=tmp_path / "runs", record=False)
    await c.start_run()
    await scan_into(dicom_root / "siemens_xa60_enhanced_sms2", watch, interval=0.2)
    last = time.monotonic()
    ended = await c.wait_ended(timeout=30)
    assert ended is not None and ended.reason == "no volume for 2 TRs after the last" and ended.volumes == 3
    assert time.monotonic() - last < 6.0  # 2 x 1.23 s (and the tick); 2 x 5 s would be 10 s


async def test_a_demo_replay_runs_at_the_settings_tr_and_says_so(tmp_path: Path, dicom_root: Path) -> None:
    """The simulated scanner replays a 3.2 s series every 0.3 s: the run's TR is the pace it comes at."""
    series = dicom_root / "siemens_mosaic_ep2d_int_6vol"
    s = S.RunSettings().with_values("run", tr=0.3).with_values("project", name="template", settings={"baseline": 2})
    session = ConsoleSession(s, demo=True, demo_source=series, runs_dir=tmp_path / "runs",
                             worker_options={"in_process": True})
    out = io.StringIO()
    status = await asyncio.wait_for(run_session(session, out=out), 90)
    text = out.getvalue()
    assert ("settings TR 0.3 s differs from the scanner's 3.2 s (headers of IM-0003-0001.dcm); the project gets "
            '0.3 s ([run] tr_source = "settings")') in text, text
    assert status == 0, text
