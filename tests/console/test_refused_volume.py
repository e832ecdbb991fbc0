"""A volume of another matrix in the run's series, seen from the console as a user runs it: refused with an
error naming the file and both matrices, the run goes on, and its recording and BIDS output are whole."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import pydicom
import pytest

from rtcontrol.console import events as ev
from rtcontrol.console import settings as S
from rtcontrol.console.headless import run_session
from rtcontrol.console.session import ConsoleSession

pytestmark = pytest.mark.timeout(120)


async def test_a_volume_of_another_matrix_is_refused_and_the_recording_stays_whole(
        tmp_path: Path, dicom_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    series = sorted(p for p in (dicom_root / "siemens_mosaic_ep2d_int_6vol").iterdir() if p.suffix == ".dcm")
    odd = pydicom.dcmread(next(p for p in (dicom_root / "siemens_mosaic_ax_35sl").iterdir() if p.name.startswith("MR")))
    first = pydicom.dcmread(series[0], stop_before_pixels=True)
    odd.SeriesInstanceUID, odd.SeriesNumber, odd.AcquisitionNumber = first.SeriesInstanceUID, first.SeriesNumber, 4
    staged = tmp_path / "odd.dcm"
    odd.save_as(staged)
    watch = tmp_path / "watch"
    watch.mkdir()
    s = S.RunSettings().with_values("run", tr=3.2, watch_folder=str(watch), expected_volumes=6)
    s = s.with_values("project", name="template", settings={"baseline": 2})
    session = ConsoleSession(s, runs_dir=tmp_path / "runs", worker_options={"in_process": True})

    async def scanner() -> None:
        c = session.controller
        while c.state != ev.RUNNING or c.worker is None:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        for n, f in enumerate(series):
            if n == 3:  # the odd file claims volume 3's place before the real one comes
                shutil.copyfile(staged, watch / ".odd.part")
                (watch / ".odd.part").rename(watch / "odd.dcm")
                await asyncio.sleep(0.3)
            shutil.copyfile(f, watch / (f.name + ".part"))
            (watch / (f.name + ".part")).rename(watch / f.name)
            await asyncio.sleep(0.15)

    out = io.StringIO()
    feeding = asyncio.create_task(scanner())
    status = await asyncio.wait_for(run_session(session, out=out), 90)
    await feeding
    text = out.getvalue()
    refusals = [line for line in text.splitlines() if "odd.dcm" in line]
    assert len(refusals) == 1, text
    # said once: `run --no-gui` also prints WARNING log records (stderr), so the watcher must not log it again
    assert not [r for r in caplog.records if r.name.startswith("rtcontrol.scanner") and r.levelno >= logging.WARNING]
    assert "64x64x35" in refusals[0] and "64x64x36" in refusals[0] and "refused" in refusals[0], refusals
    assert "ended: all 6 volumes arrived" in text, text
    assert status == 0, text  # nothing of the run was lost: the refused file is a warning, as a foreign file is
    (bold,) = (tmp_path / "runs" / "bids").rglob("*_bold.nii.gz")
    img = nib.load(bold)
    assert img.shape == (64, 64, 36, 6)
    sidecar = json.loads(bold.with_name(bold.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["RepetitionTime"] == pytest.approx(3.2)
