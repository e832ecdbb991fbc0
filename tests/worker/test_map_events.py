"""The worker's outbox keeps only the newest unacknowledged map of each name, and the events stay in order."""

from __future__ import annotations

import numpy as np

from rtcontrol.link.codec import decode_message, encode_map, split_blob
from rtcontrol.worker.server import Session

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _map(index: int, name: str = "t", run: str = "run-1") -> bytes:
    return encode_map(run, index, name, np.full((8, 8, 4), float(index)), AFFINE)


def test_an_unacknowledged_map_is_replaced_by_a_placeholder_when_a_newer_one_comes() -> None:
    s = Session("s")
    for i in range(3):
        s.emit("feedback", run="run-1", index=i)
        s.emit_map(_map(i), "run-1")
    s.emit_map(_map(2, name="z"), "run-1")
    assert list(s.outbox) == [1, 2, 3, 4, 5, 6, 7]  # every seq is still there: the console sees no gap
    kinds = []
    for seq, item in s.outbox.items():
        if isinstance(item, bytes):
            header, _ = split_blob(item)
            assert header["seq"] == seq
            kinds.append(f"map {header['name']}{header['index']}")
        else:
            kinds.append(decode_message(item)["event"])
    assert kinds == ["feedback", "map_superseded", "feedback", "map_superseded", "feedback", "map t2", "map z2"]
    # a map the console acknowledged is gone; the next one does not touch it
    s.ack(7)
    s.emit_map(_map(3), "run-1")
    assert len(s.outbox) == 1


def test_a_map_too_large_or_of_another_run_is_dropped_with_a_log_line() -> None:
    s = Session("s", max_event=600)
    s.emit_map(_map(0), "run-1")  # 8x8x4 float16 is 512 bytes + its header: over 600 bytes
    s.emit_map(_map(1), "run-1")  # said once per run and name
    big = Session("b")
    big.emit_map(_map(0, run="other"), "run-1")
    events = [decode_message(m) for m in [*s.outbox.values(), *big.outbox.values()]]
    assert [e["event"] for e in events] == ["log", "log"], events
    assert "map 't' is" in events[0]["message"] and "over the 600-byte limit" in events[0]["message"]
    assert "names run 'other', not 'run-1'" in events[1]["message"]
