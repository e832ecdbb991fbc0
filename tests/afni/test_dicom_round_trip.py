"""Every fixture DICOM series (oblique ones included) through the sender to the plug_realtime stand-in:
voxels equal, geometry equal in world space, TR and slice timing as AFNI stores them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from rtcontrol.afni import protocol
from rtcontrol.afni.sender import AfniSender
from rtcontrol.afni.source import load_source
from tests.support.afni import assert_same_world, expected_values, settings
from tests.support.fixtures import SERIES
from tests.support.plug_realtime import FakeAfni
from tests.support.wait import wait_until


@pytest.fixture(scope="module")
def series_volumes(dicom_root: Path) -> dict:
    return {name: load_source(dicom_root / name) for name in SERIES}


@pytest.mark.parametrize("series", SERIES)
async def test_series_round_trip(series_volumes: dict, series: str) -> None:
    [(run_name, volumes)] = series_volumes[series].items()
    assert volumes, series
    with FakeAfni() as afni:
        sender = AfniSender(settings(afni, queue_size=len(volumes) + 1))
        await sender.start()
        for v in volumes:
            sender.submit(v)
            await asyncio.sleep(0)
        assert await wait_until(lambda: sender.status.volumes_sent + sender.status.volumes_not_sent == len(volumes), 20)
        assert sender.status.volumes_sent == len(volumes), sender.status
        await sender.close()
        assert afni.wait_sessions_done(1)
    [session] = afni.sessions
    assert not session.errors, session.errors
    [run] = session.runs
    assert run.complete and not run.warnings, run.warnings
    assert len(run.images) == len(volumes) and run.partial == b""
    for vol, got in zip(volumes, run.volumes()):
        np.testing.assert_array_equal(got, expected_values(vol, run.info["datum"]))
    first = volumes[0]
    assert_same_world(run.world_ras(), first)
    # the cardinal grid AFNI shows also keeps voxel (0,0,0) in place, with the true voxel sizes
    np.testing.assert_allclose(run.cardinal_ras()[:3, 3], first.affine[:3, 3], atol=1e-3)
    np.testing.assert_allclose(np.abs(run.deltas()), first.voxel_size, rtol=1e-5)
    assert ("oblique" in run.info) == protocol.is_oblique(first.affine)
    assert run.info["tr"] == pytest.approx(first.tr, rel=1e-6)
    if first.slice_timing is not None:
        assert run.info["acq"] == "3D+timing"
        np.testing.assert_allclose(run.info["tpattern_times"], first.slice_timing, atol=1e-6)
    else:
        assert run.info["acq"] == "3D+t"


def test_fixture_series_cover_oblique_and_scaled(series_volumes: dict) -> None:
    """The suite above is only meaningful if it exercises the hard cases."""
    firsts = [next(iter(d.values()))[0] for d in series_volumes.values()]
    assert sum(protocol.is_oblique(v.affine) for v in firsts) >= 3
    assert any(protocol.choose_datum(v) == "float" for v in firsts)  # Philips scaling -> float
    assert any(protocol.choose_datum(v) == "short" for v in firsts)
