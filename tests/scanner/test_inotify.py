"""The watcher's direct inotify source: complete files (closed, renamed in) and the changes it notes."""

from __future__ import annotations

import os
import struct
import sys
import threading
import time
from pathlib import Path

import pytest

from rtcontrol.scanner.inotify import IN_Q_OVERFLOW, FolderEvents

pytestmark = [pytest.mark.timeout(30),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")]


class Seen:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.lost = 0
        self.changed = threading.Event()

    def complete(self, path: Path, t: float) -> None:
        self.events.append(("complete", path.name))
        self.changed.set()

    def change(self, kind: str, path: Path, t: float) -> None:
        self.events.append((kind, path.name))

    def on_lost(self) -> None:
        self.lost += 1

    def wait_for(self, event: tuple[str, str]) -> None:
        deadline = time.monotonic() + 5
        while event not in self.events and time.monotonic() < deadline:
            self.changed.wait(0.05)
            self.changed.clear()
        assert event in self.events, self.events


def test_closed_and_moved_in_files_are_complete_and_changes_are_said_once(tmp_path: Path) -> None:
    watch, outside = tmp_path / "watch", tmp_path / "export"
    watch.mkdir()
    outside.mkdir()
    seen = Seen()
    events = FolderEvents(watch, seen.complete, seen.change, seen.on_lost)
    assert events.start()
    try:
        fd = os.open(watch / "a.dcm", os.O_WRONLY | os.O_CREAT)
        for _ in range(20):  # written in chunks: "modified" once, not 20 times
            os.write(fd, b"x" * 4096)
        os.close(fd)
        seen.wait_for(("complete", "a.dcm"))
        (outside / "b.dcm").write_bytes(b"y" * 100)
        os.rename(outside / "b.dcm", watch / "b.dcm")  # renamed in from another folder: no close event here
        seen.wait_for(("complete", "b.dcm"))
        (watch / "sub").mkdir()  # folders are not files
        time.sleep(0.1)
    finally:
        events.stop()
    assert seen.events == [("created", "a.dcm"), ("modified", "a.dcm"), ("complete", "a.dcm"), ("complete", "b.dcm")]
    assert seen.lost == 0


def test_an_overflowed_queue_asks_for_a_look_at_the_folder(tmp_path: Path) -> None:
    seen = Seen()
    events = FolderEvents(tmp_path, seen.complete, seen.change, seen.on_lost)
    overflow = struct.pack("iIII", -1, IN_Q_OVERFLOW, 0, 0)
    events._dispatch(overflow, time.monotonic())
    assert seen.lost == 1 and seen.events == []


async def test_the_watcher_looks_again_after_lost_events(tmp_path: Path, dicom_root: Path) -> None:
    """Files that landed while events were lost are found by the look at the folder that follows."""
    import asyncio
    import shutil

    from rtcontrol.scanner.watcher import ScanWatcher

    got: list[int] = []
    watcher = ScanWatcher(tmp_path, lambda v: got.append(v.index))
    await watcher.start()
    try:
        assert watcher._direct is not None
        watcher._direct.stop()  # events from now on are lost
        source = dicom_root / "siemens_mosaic_ep2d_int_6vol"
        for f in sorted(p for p in source.iterdir() if p.suffix != ".source")[:2]:
            shutil.copyfile(f, tmp_path / f.name)
        await asyncio.sleep(0.3)
        assert got == []
        watcher._direct.on_lost()  # what the inotify thread calls on a queue overflow
        for _ in range(50):
            if len(got) == 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await watcher.stop()
    assert got == [0, 1]
