"""The asyncio sender against the plug_realtime stand-in: round trips, shm, busy / absent / dropping AFNI."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rtcontrol.afni import protocol
from rtcontrol.afni.channel import ChannelSettings
from rtcontrol.afni.sender import AfniSender, SenderEvent, SenderSettings
from rtcontrol.afni.shm import segment_id, string_to_key
from rtcontrol.afni.source import load_nifti
from rtcontrol.scanner.volume import Volume
from tests.support.afni import expected_values, settings
from tests.support.plug_realtime import FakeAfni, free_port
from tests.support.wait import wait_until


async def feed(sender: AfniSender, volumes: list[Volume], gap: float = 0.0) -> None:
    for v in volumes:
        sender.submit(v)
        await asyncio.sleep(gap)


@pytest.mark.parametrize("name", ["tiny_s16.nii", "tiny_f32.nii"])
async def test_nifti_round_trip(rtfeedme_dir: Path, name: str) -> None:
    volumes = load_nifti(rtfeedme_dir / name)
    with FakeAfni() as afni:
        s = settings(afni, header=protocol.HeaderOptions(note="from rtcontrol"))
        events: list[SenderEvent] = []
        sender = AfniSender(s, events.append)
        await sender.start()
        await feed(sender, volumes)
        assert await wait_until(lambda: sender.status.volumes_sent == 5)
        await sender.close()
        assert afni.wait_sessions_done(1)
    [session] = afni.sessions
    assert not session.errors
    assert session.control == f"tcp:127.0.0.1:{s.channel.data_port}".encode() + b"\0"
    [run] = session.runs
    assert not run.warnings and run.partial == b"" and len(run.images) == 5
    assert run.info["prefix"] == name[:-4] and run.info["notes"] == ["from rtcontrol"]
    for vol, got in zip(volumes, run.volumes()):
        np.testing.assert_array_equal(got, expected_values(vol, run.info["datum"]))
    np.testing.assert_allclose(run.world_ras(), nib.load(rtfeedme_dir / name).affine, atol=1e-6)
    assert run.info["tr"] == pytest.approx(2.0)
    assert [e.index for e in events if e.kind == "sent"] == [0, 1, 2, 3, 4]
    assert not [e for e in events if e.kind in ("not_sent", "error")]


async def test_shm_round_trip_and_segment_removed(rtfeedme_dir: Path) -> None:
    volumes = load_nifti(rtfeedme_dir / "tiny_f32.nii")
    name = f"rtc{time.monotonic_ns() % 10**8}"
    with FakeAfni() as afni:
        s = settings(afni, shm_name=name, shm_size=1500)  # smaller than 2 images: the ring wraps
        sender = AfniSender(s)
        await sender.start()
        await feed(sender, volumes)
        assert await wait_until(lambda: sender.status.volumes_sent == 5)
        await sender.close()
        assert afni.wait_sessions_done(1)
    [session] = afni.sessions
    assert not session.errors and session.spec == f"shm:{name}:1500"
    [run] = session.runs
    for vol, got in zip(volumes, run.volumes()):
        np.testing.assert_array_equal(got, vol.data)
    assert segment_id(string_to_key(name)) is None  # nothing left behind


async def test_keep_connection_sends_end_marker_and_new_header(rtfeedme_dir: Path) -> None:
    volumes = load_nifti(rtfeedme_dir / "tiny_s16.nii")
    second = [
        Volume(v.data, v.affine, run="run2", index=i, tr=v.tr) for i, v in enumerate(volumes[2:])
    ]
    with FakeAfni() as afni:
        sender = AfniSender(settings(afni, keep_connection=True))
        await sender.start()
        await feed(sender, volumes[:2] + second)
        assert await wait_until(lambda: sender.status.volumes_sent == 5)
        await sender.close()
        assert afni.wait_sessions_done(1)
    [session] = afni.sessions  # one control connection, one data connection, two AFNI runs
    assert afni.control_connections == 1
    first, last = session.runs
    assert first.ended_by_marker and len(first.images) == 2 and not last.ended_by_marker
    assert first.info["prefix"] == "tiny_s16" and last.info["prefix"] == "run2"
    np.testing.assert_array_equal(last.volumes()[0], volumes[2].data)


async def test_new_run_closes_data_channel_by_default(rtfeedme_dir: Path) -> None:
    volumes = load_nifti(rtfeedme_dir / "tiny_s16.nii")
    second = [Volume(v.data, v.affine, run="run2", index=i, tr=v.tr) for i, v in enumerate(volumes[:2])]
    with FakeAfni() as afni:
        events: list[SenderEvent] = []
        sender = AfniSender(settings(afni), events.append)
        await sender.start()
        await feed(sender, volumes[:3] + second)
        assert await wait_until(lambda: sender.status.volumes_sent == 5)
        await sender.close()
        assert afni.wait_sessions_done(2)
    assert [len(s.runs[0].images) for s in afni.sessions] == [3, 2]
    assert sum(e.kind == "run_end" for e in events) == 2


async def test_afni_not_started_reports_not_sent_then_recovers(rtfeedme_dir: Path) -> None:
    volumes = load_nifti(rtfeedme_dir / "tiny_s16.nii")
    port = free_port()
    events: list[SenderEvent] = []
    sender = AfniSender(settings(None, control_port=port, retry_interval=0.05), events.append)
    await sender.start()
    t0 = time.perf_counter()
    accepted = [sender.submit(v) for v in volumes[:2]]
    assert accepted == [True, True]  # queued at once, whatever AFNI does
    assert await wait_until(lambda: sender.status.volumes_not_sent == 2)
    not_sent = [e for e in events if e.kind == "not_sent"]
    assert "not listening" in not_sent[0].message and sender.status.state == "waiting"
    assert time.perf_counter() - t0 < 5
    with FakeAfni(control_port=port) as afni:  # AFNI comes up on that port
        await asyncio.sleep(0.06)
        await feed(sender, volumes[2:])
        assert await wait_until(lambda: sender.status.volumes_sent == 3)
        await sender.close()
        assert afni.wait_sessions_done(1)
    [run] = afni.sessions[0].runs
    for vol, got in zip(volumes[2:], run.volumes()):
        np.testing.assert_array_equal(got, vol.data)


async def test_untrusted_afni_refusal_is_reported_and_never_blocks(rtfeedme_dir: Path) -> None:
    volumes = load_nifti(rtfeedme_dir / "tiny_s16.nii")
    with FakeAfni(untrusted=True) as afni:
        events: list[SenderEvent] = []
        sender = AfniSender(settings(afni, retry_interval=0.0, data_timeout=0.2), events.append)
        await sender.start()
        await feed(sender, volumes)
        assert await wait_until(lambda: sender.status.volumes_not_sent == 5)
        await sender.close()
    assert sender.status.volumes_sent == 0 and afni.control_connections >= 1
    reasons = " ".join(e.message for e in events if e.kind == "not_sent")
    assert "AFNI_TRUSTHOST" in reasons


async def test_drop_mid_run_reports_and_recovers_with_new_run(rtfeedme_dir: Path) -> None:
    volumes = load_nifti(rtfeedme_dir / "tiny_s16.nii")
    volumes = volumes + [Volume(v.data, v.affine, run=v.run, index=5 + v.index, tr=v.tr) for v in volumes]
    with FakeAfni(drop_after=2) as afni:
        events: list[SenderEvent] = []
        sender = AfniSender(settings(afni, retry_interval=0.0), events.append)
        await sender.start()
        for v in volumes:
            sender.submit(v)
            await asyncio.sleep(0.03)  # the drop is noticed between volumes, as at a real TR
        assert await wait_until(lambda: sender.status.volumes_sent + sender.status.volumes_not_sent >= 10)
        await sender.close()
        assert afni.wait_sessions_done(2)
    assert afni.sessions[0].dropped and len(afni.sessions[0].runs[0].images) == 2
    assert len(afni.sessions) >= 2  # reconnected: a new AFNI run
    received = [img for s in afni.sessions for r in s.runs for img in r.images]
    sent = [e.index for e in events if e.kind == "sent"]
    assert sent[:2] == [0, 1] and len(received) >= len(sent) - 1  # at most one went into the dying socket
    # the drop is reported (noticed between volumes -> reconnect; or on a write -> not sent)
    assert any("dropped" in e.message or "lost" in e.message for e in events if e.kind in ("not_sent", "warning"))
    assert sender.status.volumes_sent + sender.status.volumes_not_sent == 10
    assert sent[-1] == 9  # recovered: the last volume went out on the new connection
    last_run = afni.sessions[-1].runs[0]
    np.testing.assert_array_equal(last_run.volumes()[-1], volumes[-1].data)


async def test_stalled_afni_never_blocks_the_caller(rtfeedme_dir: Path) -> None:
    """AFNI accepts but never reads (frozen GUI): the bounded queue fills, submit() says no."""
    big = Volume(np.ones((128, 128, 64), np.int16), np.eye(4), run="big", tr=1.0)
    control, data = socket.socket(), socket.socket()
    for s in (control, data):
        s.bind(("127.0.0.1", 0))
        s.listen(1)
    events: list[SenderEvent] = []
    cs = ChannelSettings(
        host="127.0.0.1", control_port=control.getsockname()[1], data_port=data.getsockname()[1], send_timeout=0.5
    )
    sender = AfniSender(SenderSettings(channel=cs, queue_size=2, header_pause=0.0), events.append)
    await sender.start()
    results = []
    for i in range(8):
        results.append(sender.submit(Volume(big.data, big.affine, run="big", index=i, tr=1.0)))
        await asyncio.sleep(0.01)
    assert False in results  # backlog full: reported, not waited for
    assert any("backlog full" in e.message for e in events if e.kind == "not_sent")
    assert await wait_until(lambda: sender.status.volumes_sent + sender.status.volumes_not_sent == 8, 10)
    await sender.close(timeout=2)
    control.close()
    data.close()


async def test_afni_busy_with_another_source_then_free(rtfeedme_dir: Path) -> None:
    """While one source's run is active AFNI does not listen on the control port: the second
    sender is refused, reports its volumes as not sent, and gets through once the first ends."""
    volumes = load_nifti(rtfeedme_dir / "tiny_s16.nii")
    with FakeAfni() as afni:
        first = AfniSender(settings(afni))
        await first.start()
        first.submit(volumes[0])
        assert await wait_until(lambda: first.status.volumes_sent == 1)
        events: list[SenderEvent] = []
        second = AfniSender(settings(afni, retry_interval=0.05), events.append)
        await second.start()
        second.submit(Volume(volumes[1].data, volumes[1].affine, run="other", index=0, tr=2.0))
        assert await wait_until(lambda: second.status.volumes_not_sent == 1)
        assert "not listening" in [e for e in events if e.kind == "not_sent"][0].message
        await first.close()  # the first source ends its run; AFNI listens again
        assert await wait_until(lambda: bool(afni.sessions) and afni.sessions[0].done)
        await asyncio.sleep(0.1)
        second.submit(Volume(volumes[2].data, volumes[2].affine, run="other", index=1, tr=2.0))
        assert await wait_until(lambda: second.status.volumes_sent == 1)
        await second.close()
        assert afni.wait_sessions_done(2)
    assert [len(s.runs[0].images) for s in afni.sessions] == [1, 1]
    np.testing.assert_array_equal(afni.sessions[1].runs[0].volumes()[0], volumes[2].data)


@pytest.mark.parametrize(
    "name,capture", [("tiny_s16.nii", "s16_3D"), ("tiny_f32.nii", "f32_3D"), ("tiny_s16.nii", "s16_break")]
)
async def test_bytes_on_the_wire_equal_rtfeedme_capture(rtfeedme_dir: Path, name: str, capture: str) -> None:
    """What our sender writes on both sockets, as read by the stand-in, is rtfeedme's capture except
    the data port number (chosen per test) and our extra ``BYTEORDER LSB_FIRST`` line (rtfeedme sends
    host order undeclared; both mean little-endian here). No PREFIX/NOTE so nothing else differs."""
    volumes = load_nifti(rtfeedme_dir / name)
    if capture == "s16_break":  # two runs on one connection: 2 volumes, end marker, 3 volumes
        volumes = volumes[:2] + [Volume(v.data, v.affine, run="second", index=v.index, tr=v.tr) for v in volumes[2:]]
    with FakeAfni() as afni:
        s = settings(afni, prefix_from_run=False, keep_connection=capture == "s16_break")
        s = replace(s, channel=replace(s.channel, host="localhost"))  # as rtfeedme -host localhost
        sender = AfniSender(s)
        await sender.start()
        await feed(sender, volumes)
        assert await wait_until(lambda: sender.status.volumes_sent == 5)
        await sender.close()
        assert afni.wait_sessions_done(1)
    [session] = afni.sessions
    captured_control = (rtfeedme_dir / f"{capture}_control.bin").read_bytes()
    assert session.control == captured_control.replace(b"7960", str(s.channel.data_port).encode())
    captured = (rtfeedme_dir / f"{capture}_data.bin").read_bytes()
    assert bytes(session.data).replace(b"BYTEORDER LSB_FIRST\n", b"") == captured


async def test_shm_two_runs_on_one_segment_header_in_one_piece(rtfeedme_dir: Path) -> None:
    """keep_connection over a small shm ring: the second metadata block waits for room and goes in whole."""
    volumes = load_nifti(rtfeedme_dir / "tiny_s16.nii")
    second = [Volume(v.data, v.affine, run="second", index=v.index, tr=v.tr) for v in volumes[2:]]
    name = f"rtk{time.monotonic_ns() % 10**8}"
    with FakeAfni() as afni:
        sender = AfniSender(settings(afni, shm_name=name, shm_size=700, keep_connection=True))
        await sender.start()
        await feed(sender, volumes[:2] + second)
        assert await wait_until(lambda: sender.status.volumes_sent == 5)
        await sender.close()
        assert afni.wait_sessions_done(1)
    [session] = afni.sessions
    assert not session.errors
    first, last = session.runs
    assert first.ended_by_marker and [len(first.images), len(last.images)] == [2, 3]
    np.testing.assert_array_equal(last.volumes()[2], volumes[4].data)
    assert segment_id(string_to_key(name)) is None
