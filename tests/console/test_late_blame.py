""""Analysis late" blames the right stage, seen from the console: a file that took 1 s to be written is the
scanner's export being slow (said as such), not the analysis."""

from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path

import pytest

from rtcontrol.console import events as ev
from rtcontrol.console import settings as S
from rtcontrol.console.headless import run_session
from rtcontrol.console.session import ConsoleSession

pytestmark = pytest.mark.timeout(120)


async def test_a_file_slow_to_be_written_is_blamed_on_the_export(tmp_path: Path, dicom_root: Path) -> None:
    series = sorted(p for p in (dicom_root / "siemens_mosaic_ep2d_int_6vol").iterdir() if p.suffix == ".dcm")
    watch = tmp_path / "watch"
    watch.mkdir()
    s = S.RunSettings().with_values("run", tr=0.5, tr_source="settings", watch_folder=str(watch),
                                       expected_volumes=6)  # a 0.5 s TR for this series (3.2 s in its headers)
    s = s.with_values("project", name="template", settings={"baseline": 2})
    session = ConsoleSession(s, runs_dir=tmp_path / "runs", worker_options={"in_process": True})

    def write(path: Path, data: bytes, seconds: float) -> None:
        """In place, in 10 chunks over ``seconds`` (a slow export or network copy)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            step = -(-len(data) // 10)
            for at in range(0, len(data), step):
                os.write(fd, data[at : at + step])
                time.sleep(seconds / 10)
        finally:
            os.close(fd)

    async def scanner() -> None:
        c = session.controller
        while c.state != ev.RUNNING or c.worker is None:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        for n, f in enumerate(series):
            await asyncio.to_thread(write, watch / f.name, f.read_bytes(), 1.0 if n == 3 else 0.0)
            await asyncio.sleep(0.3)

    out = io.StringIO()
    feeding = asyncio.create_task(scanner())
    status = await asyncio.wait_for(run_session(session, out=out), 90)
    await feeding
    text = out.getvalue()
    blamed = [line for line in text.splitlines() if "late" in line and "volume 3" in line]
    assert len(blamed) == 1, text
    assert "scanner late: volume 3's file took" in blamed[0] and "the analysis was not slow" in blamed[0], blamed
    took = float(blamed[0].split("file took ")[1].split(" s")[0])
    assert 0.8 <= took <= 1.5, blamed  # the time the file took to be written, not the whole delay
    assert "analysis late: volume 3" not in text, text  # (volume 0 is another matter: the first volume's wait)
    assert status == 0, text
