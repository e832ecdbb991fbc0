"""The wire codec, byte for byte."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from rtcontrol.link.codec import (
    PROTOCOL_VERSION,
    FrameError,
    decode_message,
    decode_volume,
    encode_blob,
    encode_message,
    encode_volume,
    split_blob,
)
from rtcontrol.scanner.volume import Timeline, Volume


def make_volume(dtype="<i2", shape=(4, 3, 2)) -> Volume:
    data = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    aff[:3, 3] = [-10, 5, 7.5]
    return Volume(
        data=data, affine=aff, run="run-01", index=7, tr=2.0, slice_timing=(0.0, 1.0),
        scl_slope=2.0, scl_inter=-1.0, acquisition_time=3600.5,
        header={"RepetitionTime": 2000, "PatientName": "Doe^John", "Manufacturer": "SIEMENS"},
        timeline=Timeline({"file_seen": 1.0, "parsed": 1.25}),
    )


def test_control_message_round_trip_and_layout() -> None:
    text = encode_message("ping", t0=1.5)
    assert json.loads(text) == {"type": "ping", "v": PROTOCOL_VERSION, "t0": 1.5}
    assert decode_message(text)["t0"] == 1.5


@pytest.mark.parametrize(
    "text, needle",
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"type": "ping", "v": 99}', "protocol version 99"),
        ('{"type": "ping"}', "protocol version None"),
        ('{"type": "launch_missiles", "v": 1}', "unknown message type 'launch_missiles'"),
    ],
)
def test_bad_control_frames(text: str, needle: str) -> None:
    with pytest.raises(FrameError, match=needle):
        decode_message(text)


def test_binary_frame_is_not_a_control_message() -> None:
    with pytest.raises(FrameError, match="must be a text frame"):
        decode_message(b'{"type": "ping", "v": 1}')


def test_volume_frame_bytes() -> None:
    vol = make_volume()
    frame = encode_volume(vol, seq=3)
    (n,) = struct.unpack_from("<I", frame)
    header = json.loads(frame[4 : 4 + n])
    assert header["kind"] == "volume" and header["v"] == PROTOCOL_VERSION
    assert header["run"] == "run-01" and header["index"] == 7 and header["seq"] == 3
    assert header["shape"] == [4, 3, 2] and header["dtype"] == "<i2"
    assert header["header"] == {"RepetitionTime": 2000, "Manufacturer": "SIEMENS"}  # no patient name
    # the payload is exactly the little-endian C-order bytes
    assert frame[4 + n :] == vol.data.astype("<i2").tobytes(order="C")
    assert len(frame) == 4 + n + 4 * 3 * 2 * 2


@pytest.mark.parametrize("dtype", ["<i2", ">i2", "<f4", ">f8", "|u1", "<u2", "<i4"])
def test_volume_round_trip(dtype: str) -> None:
    vol = make_volume(dtype)
    back, seq = decode_volume(encode_volume(vol, seq=11))
    assert seq == 11
    np.testing.assert_array_equal(back.data, vol.data)
    assert back.data.dtype == np.dtype(dtype).newbyteorder("<")
    np.testing.assert_array_equal(back.affine, vol.affine)
    assert (back.run, back.index, back.tr, back.slice_timing) == ("run-01", 7, 2.0, (0.0, 1.0))
    assert (back.scl_slope, back.scl_inter, back.acquisition_time) == (2.0, -1.0, 3600.5)
    assert back.timeline.to_dict() == {"file_seen": 1.0, "parsed": 1.25}
    assert "PatientName" not in back.header


def test_big_endian_is_converted_on_the_wire() -> None:
    vol = make_volume(">i2")
    frame = encode_volume(vol)
    assert frame.endswith(vol.data.astype("<i2").tobytes())


def test_fortran_order_data_is_sent_in_c_order() -> None:
    vol = make_volume()
    vol.data = np.asfortranarray(vol.data)
    back, _ = decode_volume(encode_volume(vol))
    np.testing.assert_array_equal(back.data, vol.data)


def test_decoded_array_is_a_read_only_view_unless_copied() -> None:
    frame = encode_volume(make_volume())
    view, _ = decode_volume(frame)
    assert not view.data.flags.writeable
    copy, _ = decode_volume(frame, copy=True)
    copy.data[0, 0, 0] = 99


def test_unsendable_dtype() -> None:
    vol = make_volume()
    vol.data = vol.data.astype(np.complex64)
    with pytest.raises(FrameError, match="cannot be sent"):
        encode_volume(vol)


def _tamper(frame: bytes, **changes) -> bytes:
    header, payload = split_blob(frame)
    header.update(changes)
    header.pop("v")
    return encode_blob(header, payload)


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"dtype": "|O"}, "dtype '|O' is not allowed"),
        ({"dtype": "<c8"}, "not allowed"),
        ({"shape": [4, 3, 3]}, "48 data bytes but shape \\[4, 3, 3\\] of <i2 needs 72"),
        ({"shape": [4, 3]}, "three positive integers"),
        ({"shape": [4, 3, -2]}, "three positive integers"),
        ({"affine": [[1, 2], [3, 4]]}, "finite 4x4"),
        ({"timeline": {"teleported": 1.0}}, "unknown timeline stage"),
        ({"header": {"PatientID": "123"}}, "not on the allowlist"),
        ({"kind": "blob"}, "expected a volume frame"),
    ],
)
def test_bad_volume_headers(changes: dict, needle: str) -> None:
    with pytest.raises(FrameError, match=needle):
        decode_volume(_tamper(encode_volume(make_volume()), **changes))


def test_truncated_and_corrupt_frames() -> None:
    frame = encode_volume(make_volume())
    with pytest.raises(FrameError, match="needs 48"):
        decode_volume(frame[:-1])
    with pytest.raises(FrameError, match="shorter than its 4-byte"):
        decode_volume(b"\x01\x00")
    with pytest.raises(FrameError, match="runs past the end"):
        decode_volume(struct.pack("<I", 1000) + b"{}")
    with pytest.raises(FrameError, match="exceeds the limit"):
        decode_volume(struct.pack("<I", 1 << 30) + b"{}")
    with pytest.raises(FrameError, match="not valid JSON"):
        decode_volume(struct.pack("<I", 3) + b"{x}")
    with pytest.raises(FrameError, match="protocol version 2"):
        decode_volume(struct.pack("<I", 24) + b'{"kind":"volume","v":2} ')


@pytest.mark.parametrize("text", ["[" * 100_000, "[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000])
def test_deeply_nested_control_frame_is_a_frame_error_not_a_recursion_error(text: str) -> None:
    with pytest.raises(FrameError, match="control frame: JSON nested deeper than 128 levels is refused"):
        decode_message(text)


def test_nesting_just_over_the_limit_is_refused_and_at_the_limit_accepted() -> None:
    from rtcontrol.link.codec import MAX_JSON_DEPTH, JsonTooDeep, loads_json

    ok = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert loads_json(ok) == json.loads(ok)
    deep = '{"x":' + "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH + "}"  # parses in Python, too deep for us
    with pytest.raises(JsonTooDeep):
        loads_json(deep)
    wide = json.dumps({"values": [[i, [i]] for i in range(1000)]})  # many brackets, shallow: fine
    assert len(loads_json(wide)["values"]) == 1000


def test_deeply_nested_binary_header_is_a_frame_error() -> None:
    head = b"[" * 50_000
    with pytest.raises(FrameError, match="binary frame header: JSON nested deeper"):
        split_blob(struct.pack("<I", len(head)) + head)


def test_a_message_nested_too_deep_is_refused_when_encoded() -> None:
    from rtcontrol.link.codec import JsonTooDeep

    value: list = []
    for _ in range(200):
        value = [value]
    with pytest.raises(JsonTooDeep, match="'event' message nested deeper than 128 levels cannot be sent"):
        encode_message("event", feedback=value)
    for _ in range(5000):
        value = [value]
    with pytest.raises(JsonTooDeep):  # json.dumps itself would raise RecursionError here
        encode_message("event", feedback=value)
