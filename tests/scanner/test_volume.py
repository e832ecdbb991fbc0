from __future__ import annotations

import numpy as np
import pytest

from rtcontrol.scanner.volume import Timeline, Volume


def test_header_keeps_only_allowlisted_fields() -> None:
    v = Volume(
        np.zeros((2, 2, 2), np.int16),
        np.eye(4),
        header={"PatientName": "Doe^Jane", "PatientID": "123", "RepetitionTime": 2.0, "EchoTime": np.float32(0.03)},
    )
    assert v.header == {"RepetitionTime": 2.0, "EchoTime": pytest.approx(0.03)}


def test_timeline_keeps_first_stamp_and_rejects_unknown_stage() -> None:
    t = Timeline()
    t.stamp("parsed", 1.0)
    t.stamp("parsed", 2.0)
    t.stamp("sent", 1.5)
    assert t.get("parsed") == 1.0
    assert t.between("parsed", "sent") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown timeline stage"):
        t.stamp("teleported")


def test_scaled_and_world_coords() -> None:
    aff = np.diag([2.0, 3.0, 4.0, 1.0])
    aff[:3, 3] = [10, 20, 30]
    v = Volume(np.full((2, 2, 2), 10, np.int16), aff, scl_slope=0.5, scl_inter=1.0)
    assert v.scaled()[0, 0, 0] == pytest.approx(6.0)
    np.testing.assert_allclose(v.world_coords([1, 1, 1]), [[12, 23, 34]])
    np.testing.assert_allclose(v.voxel_size, [2, 3, 4])
