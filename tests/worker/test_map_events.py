"""Maps as worker events: the outbox keeps only the newest unacknowledged map of each name, the events stay in
order, and over a dropped link (real sockets) feedback is whole and the newest map arrives."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from rtcontrol.link.codec import decode_message, encode_map, split_blob
from rtcontrol.link.events import FeedbackEvent, LogLine, MapEvent, Problem, route
from rtcontrol.worker.client import WorkerClient
from rtcontrol.worker.embedded import local_worker
from rtcontrol.worker.server import Session
from tests.support.proxy import CuttableProxy
from tests.support.wait import wait_until
from tests.support.worker import make_volume, write_project

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


def _processed(runs: Path) -> int:
    """Volumes the worker has processed (its feedback.jsonl, written once each result is on its way)."""
    return sum(len(f.read_text().splitlines()) for f in runs.glob("*/feedback.jsonl"))


MAPPING = """
    import time
    import numpy as np
    class Mapping(Project):
        def process(self, volume, ctx):
            time.sleep(0.02)
            return Result(feedback=volume.index / 100.0, maps={"t": np.full(volume.data.shape, volume.index / 4.0)})
"""


async def test_maps_across_a_dropped_link_only_the_newest_waits_and_feedback_is_whole(tmp_path: Path) -> None:
    """Real worker and run process over TLS through a proxy that cuts the link for a while: every feedback
    arrives once in order, the maps arrive in order with the values their volumes gave, and of the maps made
    while the console was away only the newest is delivered."""
    write_project(tmp_path / "projects", "mapping", MAPPING)
    feedback: list[FeedbackEvent] = []
    maps: list[MapEvent] = []
    problems: list[str] = []
    n = 30
    async with local_worker(projects=[tmp_path / "projects"], in_process=True, data_dir=tmp_path / "runs") as w:
        proxy = CuttableProxy(urlsplit(w.url).port)
        port = await proxy.start()
        client = WorkerClient(
            f"wss://127.0.0.1:{port}", w.token, expected_fingerprint=w.fingerprint, backoff=(0.05, 0.4),
            on_event=route({FeedbackEvent: feedback.append, MapEvent: maps.append,
                            Problem: lambda e: problems.append(e.message)}),
        )
        await client.connect()
        try:
            await client.start_run("mapping", {}, run="maps", tr=0.03)
            for i in range(n):
                if i == 10:
                    proxy.muted = True  # volumes 10..19 reach the worker; their acks, feedback and maps are lost
                if i == 20:
                    await wait_until(lambda: _processed(tmp_path / "runs") >= 20, 30, "the worker processed 10..19")
                    proxy.cut()  # drop; the client reconnects at once and the worker resends what was not acknowledged
                await client.send_volume(make_volume(i, run="maps"))
                await asyncio.sleep(0.03)
            await wait_until(lambda: len(feedback) >= n and maps and maps[-1].index == n - 1, 30, "all feedback")
            await client.stop_run()
        finally:
            await client.close()
            await proxy.close()
    assert not problems, problems
    assert [e.index for e in feedback] == list(range(n))
    indices = [m.index for m in maps]
    assert indices == sorted(set(indices)) and indices[-1] == n - 1
    for m in maps:
        assert m.run == "maps" and m.name == "t" and m.data.shape == (16, 16, 8) and m.data.dtype == np.float16
        assert np.all(m.data == np.float16(m.index / 4.0)) and m.peak == m.index / 4.0
        np.testing.assert_array_equal(m.affine, np.diag([3.0, 3.0, 4.0, 1.0]))  # the volume's grid
    assert 19 in indices and not set(range(10, 19)) & set(indices), "only the newest map made while away is sent"


BAD_MAPS = """
    import numpy as np
    class BadMaps(Project):
        def process(self, volume, ctx):
            good = np.full(volume.data.shape, 2.0)
            return Result(feedback=0.5, maps={"flat": np.zeros((4, 4)), "t": good, "a": good, "b": good, "c": good})
"""


async def test_a_map_that_cannot_be_sent_is_said_once_and_the_rest_goes(tmp_path: Path) -> None:
    write_project(tmp_path / "projects", "bad_maps", BAD_MAPS)
    feedback: list[FeedbackEvent] = []
    maps: list[MapEvent] = []
    logs: list[str] = []
    async with local_worker(projects=[tmp_path / "projects"], in_process=True, data_dir=tmp_path / "runs") as w:
        client = WorkerClient(w.url, w.token, expected_fingerprint=w.fingerprint,
                              on_event=route({FeedbackEvent: feedback.append, MapEvent: maps.append,
                                              LogLine: lambda e: logs.append(e.message)}))
        async with client:
            await client.start_run("bad_maps", {}, run="bad", tr=0.05)
            for i in range(3):
                await client.send_volume(make_volume(i, run="bad"))
            await wait_until(lambda: len(feedback) >= 3, 30, "feedback")
            await client.stop_run()
    assert [e.feedback for e in feedback] == [0.5, 0.5, 0.5]
    assert [(m.index, m.name) for m in maps] == [(i, n) for i in range(3) for n in ("t", "a", "b")]
    said = [line for line in logs if "statistical map" in line]
    assert len(said) == 2, said  # the bad one and the fifth, once each
    assert "map 'flat' of volume 0: must be a 3-D array" in said[0] and "(said once)" in said[0]
    assert "only 4 maps per volume are sent; c left out" in said[1]
