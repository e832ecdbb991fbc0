"""AFNI's reverse channel: the captured bytes, sent over a real socket, decode to the captured text."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest

from rtcontrol.afni.motion import (
    MotionBye,
    MotionHello,
    MotionReceiver,
    MotionRecord,
    MotionStreamError,
    MotionStreamParser,
)

CAPTURES = ("motion_only_v0", "motion_only_v1", "roi_means_v1")


def expected(txt: Path) -> dict:
    text = txt.read_text()
    version = re.search(r"version (\d+) nextra (\d+) nextra2 (\d+) floats/TR (\d+)", text)
    assert version, txt
    rows = [
        [float(v) for v in m.group(2).split()] for m in re.finditer(r"^TR\s+(\d+):(.*)$", text, re.MULTILINE)
    ]
    return {
        "hello": re.search(r"hello ([0-9a-f]{8})", text).group(1),  # type: ignore[union-attr]
        "version": tuple(int(g) for g in version.groups()),
        "rows": rows,
        "bye": "trailing magic_bye: True" in text,
    }


@pytest.mark.parametrize("name", CAPTURES)
async def test_receiver_decodes_capture_over_socket(motion_dir: Path, name: str) -> None:
    raw = (motion_dir / f"{name}.bin").read_bytes()
    want = expected(motion_dir / f"{name}.txt")
    events: list = []
    errors: list[str] = []
    done = asyncio.Event()

    def on_event(event) -> None:
        events.append(event)
        if isinstance(event, MotionBye):
            done.set()

    receiver = MotionReceiver(on_event, host="127.0.0.1", port=0, on_error=errors.append)
    port = await receiver.start()
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)  # as AFNI: it is the client
        for start in range(0, len(raw), 37):  # odd-sized pieces: records straddle reads
            writer.write(raw[start : start + 37])
            await writer.drain()
            await asyncio.sleep(0)
        await asyncio.wait_for(done.wait(), 5)
        writer.close()
    finally:
        await receiver.close()
    assert not errors
    hello = events[0]
    assert isinstance(hello, MotionHello)
    assert raw[:4].hex() == want["hello"]
    assert (hello.version, hello.nextra, hello.nextra2, hello.floats_per_tr) == want["version"]
    records = [e for e in events if isinstance(e, MotionRecord)]
    assert [r.tr_index for r in records] == list(range(len(want["rows"])))
    got = np.array([r.values for r in records])
    np.testing.assert_allclose(got, np.array(want["rows"]), atol=5.1e-5)  # the .txt has 4 decimals
    assert isinstance(events[-1], MotionBye) and want["bye"]
    if name.startswith("roi"):
        assert len(records[0].extras) == 2
    # the phantom's 2.1 mm shift along i (R-L) appears in the 2nd value from TR 5 on
    assert abs(records[4].motion[1]) < 0.01 and records[5].motion[1] == pytest.approx(2.0977, abs=1e-4)


def test_parser_rejects_foreign_bytes_and_bytes_after_bye(motion_dir: Path) -> None:
    with pytest.raises(MotionStreamError, match="bad hello"):
        MotionStreamParser().feed(b"GET / HTTP/1.1\r\n")
    parser = MotionStreamParser()
    parser.feed((motion_dir / "motion_only_v0.bin").read_bytes())
    assert parser.finished and parser.records == 10
    with pytest.raises(MotionStreamError, match="after AFNI's end marker"):
        parser.feed(b"\0\0\0\0")


def test_parser_handles_one_byte_at_a_time(motion_dir: Path) -> None:
    raw = (motion_dir / "roi_means_v1.bin").read_bytes()
    parser = MotionStreamParser()
    events = [e for b in raw for e in parser.feed(bytes([b]))]
    assert isinstance(events[0], MotionHello) and events[0].nextra == 2
    assert sum(isinstance(e, MotionRecord) for e in events) == 10 and isinstance(events[-1], MotionBye)
