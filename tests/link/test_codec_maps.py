"""Statistical maps on the wire: float16, checked both ways, a bad map refused with what is wrong."""

from __future__ import annotations

import numpy as np
import pytest

from rtcontrol.link.codec import FrameError, encode_blob, encode_map, map_from_parts, split_blob

AFFINE = np.diag([3.0, -3.0, 3.5, 1.0])


def test_a_map_round_trips_as_float16() -> None:
    t = np.linspace(-9, 9, 4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    t[0, 0, 0], t[1, 0, 0], t[2, 0, 0] = np.nan, 1e9, -np.inf
    frame = encode_map("run-1", 7, "t", t, AFFINE)
    header, payload = split_blob(frame)
    assert (header["kind"], header["run"], header["index"], header["name"], header["dtype"]) == (
        "map", "run-1", 7, "t", "<f2")
    assert payload.nbytes == t.size * 2  # half of float32: a 64x64x36 map is 295 kB
    data, affine, peak = map_from_parts(header, payload)
    assert data.dtype == np.float16 and data.shape == t.shape
    assert peak == 65504.0  # the largest |value| as sent
    np.testing.assert_array_equal(affine, AFFINE)
    ok = np.isfinite(t) & (np.abs(t) < 100)
    np.testing.assert_allclose(data[ok], t[ok], atol=0.01)
    assert data[0, 0, 0] == 0.0 and data[1, 0, 0] == 65504.0 and data[2, 0, 0] == -65504.0


@pytest.mark.parametrize(("data", "affine", "name", "match"), [
    (np.zeros((4, 4)), AFFINE, "t", "3-D array"),
    (np.zeros((2, 2, 2), complex), AFFINE, "t", "real numbers"),
    (np.array([[["a"]]]), AFFINE, "t", "real numbers"),
    (np.zeros((2, 2, 2)), np.eye(3), "t", "invertible finite 4x4"),
    (np.zeros((2, 2, 2)), np.zeros((4, 4)), "t", "invertible finite 4x4"),
    (np.zeros((2, 2, 2)), AFFINE, "", "name must be"),
    (np.zeros((2, 2, 2)), AFFINE, "x" * 65, "name must be"),
])
def test_a_map_that_cannot_be_sent_says_why(data, affine, name, match) -> None:
    with pytest.raises(FrameError, match=match):
        encode_map("run-1", 3, name, data, affine)


def test_a_bad_map_frame_is_refused() -> None:
    header, payload = split_blob(encode_map("r", 1, "t", np.ones((2, 3, 4)), AFFINE))
    with pytest.raises(FrameError, match="data bytes but shape"):
        map_from_parts(header, bytes(payload)[:-2])
    for key, value, match in (("dtype", "<f8", "dtype"), ("shape", [2, 3], "shape"), ("affine", [[1]], "affine"),
                              ("index", "1", "index an integer"), ("kind", "volume", "expected a map"),
                              ("peak", -1.0, "peak must be"), ("peak", None, "peak must be")):
        bad, body = split_blob(encode_blob({**header, key: value}, payload))
        with pytest.raises(FrameError, match=match):
            map_from_parts(bad, body)
