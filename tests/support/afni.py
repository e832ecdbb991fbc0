"""Helpers for AFNI tests: sender settings and what AFNI must have received."""

from __future__ import annotations

import numpy as np

from rtcontrol.afni import protocol
from rtcontrol.afni.channel import ChannelSettings
from rtcontrol.afni.sender import SenderSettings
from rtcontrol.scanner.volume import Volume
from tests.support.plug_realtime import FakeAfni, free_port


def settings(afni: FakeAfni | None, control_port: int | None = None, **kw) -> SenderSettings:
    channel = ChannelSettings(
        host="127.0.0.1",
        control_port=control_port or (afni.control_port if afni else free_port()),
        data_port=kw.pop("data_port", None) or free_port(),
        shm_name=kw.pop("shm_name", None),
        shm_size=kw.pop("shm_size", 1024 * 1024),
        data_timeout=kw.pop("data_timeout", 1.0),
        connect_timeout=1.0,
    )
    kw.setdefault("header_pause", 0.0)
    return SenderSettings(channel=channel, **kw)


def expected_values(volume: Volume, datum: str) -> np.ndarray:
    if datum == "float":
        return volume.scaled(np.float32) if protocol.is_scaled(volume) else volume.data.astype(np.float32)
    return volume.data.astype(np.int16)


def assert_same_world(afni_affine: np.ndarray, volume: Volume, atol: float = 1e-3) -> None:
    """Voxel centres land at the same RAS mm (corners and centre of the grid)."""
    shape = np.array(volume.shape) - 1
    corners = np.array([[i, j, k] for i in (0, shape[0]) for j in (0, shape[1]) for k in (0, shape[2])], float)
    ours = volume.world_coords(corners)
    theirs = corners @ afni_affine[:3, :3].T + afni_affine[:3, 3]
    np.testing.assert_allclose(theirs, ours, atol=atol)
