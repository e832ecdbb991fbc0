"""The wire format, as pure functions: bytes in, objects out (docs/architecture.md, decision 4).

No pickle ever (a peer must never be able to run code here), and no per-message deflate for
volumes (about 50 ms a volume for little gain on noisy EPI data).

* A control message is a JSON object ``{"type": ..., "v": PROTOCOL_VERSION, ...}`` sent as a
  websocket *text* frame.
* A volume is ONE *binary* frame::

      4-byte little-endian header length N | N bytes of UTF-8 JSON header | raw array bytes

  The header holds ``kind: "volume"``, the protocol version, run, index, seq, shape, dtype,
  affine, tr, slice_timing, scl_slope/scl_inter, acquisition_time, the allowlisted DICOM header
  and the timeline. The array bytes are little-endian, C order. No pickle, ever.
* Other binary payloads use the same layout with another ``kind`` (see :func:`encode_blob`).

Everything that arrives is validated strictly; a bad frame raises :class:`FrameError` saying
what is wrong, so a link can report it and carry on. JSON from outside the process is parsed with
:func:`loads_json` only (it refuses nesting deeper than :data:`MAX_JSON_DEPTH`).
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

from rtcontrol.errors import RtcontrolError
from rtcontrol.scanner.volume import HEADER_ALLOWLIST, STAGES, Timeline, Volume

PROTOCOL_VERSION = 1

#: Array element types a volume may carry (little-endian numpy type strings).
DTYPE_ALLOWLIST: frozenset[str] = frozenset(
    {"|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<f4", "<f8"}
)

#: Control message types either side may send; anything else is refused.
MESSAGE_TYPES: frozenset[str] = frozenset(
    {
        # session
        "hello", "welcome", "error", "ping", "pong", "bye",
        # requests and replies (``id`` pairs them)
        "request", "reply",
        # reliability
        "ack", "event", "event_ack",
        # remote files (worker asks the console)
        "file_request", "file_reply",
        # subject responses (console -> worker)
        "response",
    }
)

_LEN = struct.Struct("<I")
MAX_HEADER_BYTES = 1 << 20  # a header is a few kB; 1 MiB means something is wrong
MAX_DIM = 4096
#: Deepest nesting of arrays/objects accepted in JSON from outside (real messages use under 10 levels).
MAX_JSON_DEPTH = 128


class FrameError(RtcontrolError, ValueError):
    """A frame that does not follow the protocol; the message says what and where."""


class JsonTooDeep(FrameError):
    """JSON nested deeper than :data:`MAX_JSON_DEPTH` (a crafted message, never a real one)."""


def loads_json(text: str | bytes, *, parse_constant: Any = None, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` for text from outside the process: nesting over ``max_depth`` raises :class:`JsonTooDeep`.

    ``json.loads`` of 100,000 ``[`` raises RecursionError (an uncaught traceback that dropped the link),
    and a value nested a few hundred deep passes it but breaks later recursive code. Counting brackets
    is a C-speed upper bound on the depth, so ordinary messages pay nothing more; only a message with
    many brackets gets its parsed value walked (without recursion). A JSONDecodeError passes through.
    """
    refused = f"JSON nested deeper than {max_depth} levels is refused"
    if isinstance(text, (bytes, bytearray)):
        brackets = text.count(b"[") + text.count(b"{")
    else:
        brackets = text.count("[") + text.count("{")
    try:
        value = json.loads(text, parse_constant=parse_constant)
    except RecursionError:
        raise JsonTooDeep(refused) from None
    if brackets > max_depth and _depth_over(value, max_depth):
        raise JsonTooDeep(refused)
    return value


def _depth_over(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists/dicts deeper than ``limit`` (iterative: no recursion to overflow)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (list, dict)))
    return False


# --------------------------------------------------------------------------- control frames


def encode_message(msg_type: str, **fields: Any) -> str:
    """A control message as the text of one websocket text frame; :class:`JsonTooDeep` if it nests too deep."""
    if msg_type not in MESSAGE_TYPES:
        raise FrameError(f"unknown message type {msg_type!r}")
    body = {"type": msg_type, "v": PROTOCOL_VERSION, **fields}
    refused = f"a {msg_type!r} message nested deeper than {MAX_JSON_DEPTH} levels cannot be sent (the peer refuses it)"
    try:
        text = json.dumps(body, separators=(",", ":"), allow_nan=False)
    except RecursionError:
        raise JsonTooDeep(refused) from None
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _depth_over(body, MAX_JSON_DEPTH):
        raise JsonTooDeep(refused)  # never send what the other side must refuse
    return text


def decode_message(text: str | bytes) -> dict[str, Any]:
    """Parse and check one control frame; raises :class:`FrameError`."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        raise FrameError("a control message must be a text frame, got a binary frame")
    try:
        body = loads_json(text)
    except json.JSONDecodeError as exc:
        raise FrameError(f"control frame is not valid JSON: {exc}") from None
    except JsonTooDeep as exc:
        raise JsonTooDeep(f"control frame: {exc}") from None
    if not isinstance(body, dict):
        raise FrameError(f"control frame must be a JSON object, got {type(body).__name__}")
    _check_version(body.get("v"), "control frame")
    msg_type = body.get("type")
    if msg_type not in MESSAGE_TYPES:
        raise FrameError(f"unknown message type {msg_type!r}")
    return body


def _check_version(v: Any, what: str) -> None:
    if v != PROTOCOL_VERSION:
        raise FrameError(
            f"{what} has protocol version {v!r}, this program speaks {PROTOCOL_VERSION}; "
            "update the console and the worker to the same rtcontrol release"
        )


# --------------------------------------------------------------------------- binary frames


def encode_blob(header: dict[str, Any], payload: bytes | memoryview = b"") -> bytes:
    """A binary frame: length-prefixed JSON header (must have ``kind``) + raw payload."""
    if "kind" not in header:
        raise FrameError("a binary frame header needs a 'kind'")
    head = json.dumps({**header, "v": PROTOCOL_VERSION}, separators=(",", ":"), allow_nan=False).encode()
    return b"".join((_LEN.pack(len(head)), head, payload))


def split_blob(frame: bytes | bytearray | memoryview) -> tuple[dict[str, Any], memoryview]:
    """Header and payload (a zero-copy view) of a binary frame; raises :class:`FrameError`."""
    view = memoryview(frame)
    if view.nbytes < _LEN.size:
        raise FrameError(f"binary frame of {view.nbytes} bytes is shorter than its 4-byte header length")
    (n,) = _LEN.unpack_from(view)
    if n > MAX_HEADER_BYTES:
        raise FrameError(f"binary frame header length {n} exceeds the limit of {MAX_HEADER_BYTES} bytes")
    if _LEN.size + n > view.nbytes:
        raise FrameError(f"binary frame header length {n} runs past the end of the {view.nbytes}-byte frame")
    try:
        header = loads_json(bytes(view[_LEN.size : _LEN.size + n]))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FrameError(f"binary frame header is not valid JSON: {exc}") from None
    except JsonTooDeep as exc:
        raise JsonTooDeep(f"binary frame header: {exc}") from None
    if not isinstance(header, dict):
        raise FrameError("binary frame header must be a JSON object")
    _check_version(header.get("v"), "binary frame")
    if not isinstance(header.get("kind"), str):
        raise FrameError("binary frame header has no 'kind'")
    return header, view[_LEN.size + n :]


# --------------------------------------------------------------------------- volumes


def volume_header(volume: Volume, seq: int = 0, run: str | None = None) -> dict[str, Any]:
    """The JSON header of a volume frame (no array bytes); ``run`` overrides ``volume.run``."""
    data = volume.data
    dtype_str = data.dtype.newbyteorder("<").str  # the wire is little-endian whatever the host
    if dtype_str not in DTYPE_ALLOWLIST:
        raise FrameError(f"volume dtype {data.dtype} cannot be sent; allowed: {sorted(DTYPE_ALLOWLIST)}")
    return {
        "kind": "volume",
        "run": volume.run if run is None else run,
        "index": int(volume.index),
        "seq": int(seq),
        "shape": [int(s) for s in data.shape],
        "dtype": dtype_str,
        "affine": [[float(x) for x in row] for row in volume.affine],
        "tr": _num_or_none(volume.tr),
        "slice_timing": list(volume.slice_timing) if volume.slice_timing is not None else None,
        "scl_slope": float(volume.scl_slope),
        "scl_inter": float(volume.scl_inter),
        "acquisition_time": _num_or_none(volume.acquisition_time),
        "header": {k: v for k, v in volume.header.items() if k in HEADER_ALLOWLIST},
        "timeline": volume.timeline.to_dict(),
    }


def _num_or_none(x: float | None) -> float | None:
    return None if x is None else float(x)


def encode_volume(volume: Volume, seq: int = 0, run: str | None = None) -> bytes:
    """One binary frame for a volume: header + little-endian C-order array bytes."""
    header = volume_header(volume, seq, run)
    arr = np.ascontiguousarray(volume.data, dtype=np.dtype(header["dtype"]))
    return encode_blob(header, arr.data.cast("B"))


def decode_volume(frame: bytes | bytearray | memoryview, *, copy: bool = False) -> tuple[Volume, int]:
    """The volume and its seq from a binary frame; raises :class:`FrameError`.

    With ``copy=False`` the array is a read-only view on ``frame`` (no copy).
    """
    header, payload = split_blob(frame)
    if header["kind"] != "volume":
        raise FrameError(f"expected a volume frame, got kind {header['kind']!r}")
    return volume_from_parts(header, payload, copy=copy), int(header.get("seq", 0))


def volume_from_parts(header: dict[str, Any], payload: memoryview | bytes, *, copy: bool = False) -> Volume:
    """Check a volume header against its payload and build the :class:`Volume`."""
    where = f"volume {header.get('run')!r}#{header.get('index')!r}"
    for key in ("run", "index", "shape", "dtype", "affine"):
        if key not in header:
            raise FrameError(f"{where}: header lacks {key!r}")
    dtype = header["dtype"]
    if dtype not in DTYPE_ALLOWLIST:
        raise FrameError(f"{where}: dtype {dtype!r} is not allowed; allowed: {sorted(DTYPE_ALLOWLIST)}")
    shape = header["shape"]
    if (
        not isinstance(shape, list)
        or len(shape) != 3
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= MAX_DIM for s in shape)
    ):
        raise FrameError(f"{where}: shape must be three positive integers up to {MAX_DIM}, got {shape!r}")
    if not isinstance(header["index"], int) or not isinstance(header["run"], str):
        raise FrameError(f"{where}: run must be a string and index an integer")
    expected = math.prod(shape) * np.dtype(dtype).itemsize
    nbytes = memoryview(payload).nbytes
    if nbytes != expected:
        raise FrameError(
            f"{where}: {nbytes} data bytes but shape {shape} of {dtype} needs {expected}"
        )
    try:
        affine = np.asarray(header["affine"], dtype=np.float64)
    except (TypeError, ValueError):
        raise FrameError(f"{where}: affine is not a 4x4 matrix of numbers") from None
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise FrameError(f"{where}: affine must be a finite 4x4 matrix, got shape {affine.shape}")
    data = np.frombuffer(payload, dtype=np.dtype(dtype)).reshape(shape)
    if copy:
        data = data.copy()
    stamps = header.get("timeline") or {}
    if not isinstance(stamps, dict):
        raise FrameError(f"{where}: timeline must be an object of stage -> seconds")
    unknown = set(stamps) - set(STAGES)
    if unknown:
        raise FrameError(f"{where}: unknown timeline stage(s) {sorted(unknown)}")
    raw_header = header.get("header") or {}
    if not isinstance(raw_header, dict):
        raise FrameError(f"{where}: header must be an object")
    foreign = set(raw_header) - HEADER_ALLOWLIST
    if foreign:
        raise FrameError(f"{where}: header field(s) {sorted(foreign)} are not on the allowlist")
    try:
        return Volume(
            data=data,
            affine=affine,
            run=header["run"],
            index=header["index"],
            tr=header.get("tr"),
            slice_timing=header.get("slice_timing"),
            scl_slope=float(header.get("scl_slope", 1.0)),
            scl_inter=float(header.get("scl_inter", 0.0)),
            acquisition_time=header.get("acquisition_time"),
            header=raw_header,
            timeline=Timeline.from_dict(stamps),
        )
    except (TypeError, ValueError) as exc:
        raise FrameError(f"{where}: {exc}") from None


# --------------------------------------------------------------------------- statistical maps

#: Element types a statistical map may carry on the wire (float16 is what the worker sends).
MAP_DTYPES: frozenset[str] = frozenset({"<f2", "<f4"})
MAX_MAP_NAME = 64
_F16_MAX = float(np.finfo(np.float16).max)


def encode_map(run: str, index: int, name: str, data: Any, affine: Any) -> bytes:
    """A statistical map (a project's t-map) as one binary frame of kind ``map``: float16, C order.

    Raises :class:`FrameError` saying what is wrong with a map that cannot be sent (not 3-D, not numbers,
    no valid affine, a bad name). NaN becomes 0 and values beyond float16's range are clipped.
    """
    where = f"map {name!r} of volume {index}"
    if not isinstance(name, str) or not 0 < len(name) <= MAX_MAP_NAME:
        raise FrameError(f"{where}: the name must be a string of 1 to {MAX_MAP_NAME} characters")
    arr = np.asarray(data)
    if arr.dtype.kind not in "biuf":
        raise FrameError(f"{where}: must hold real numbers, not {arr.dtype}")
    if arr.ndim != 3 or not all(0 < n <= MAX_DIM for n in arr.shape):
        raise FrameError(f"{where}: must be a 3-D array of up to {MAX_DIM} per axis, got shape {arr.shape}")
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)) or abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise FrameError(f"{where}: its affine must be an invertible finite 4x4 matrix")
    values = np.clip(np.nan_to_num(arr.astype(np.float32, copy=False), nan=0.0, posinf=_F16_MAX, neginf=-_F16_MAX),
                     -_F16_MAX, _F16_MAX)
    half = np.ascontiguousarray(values, dtype="<f2")
    peak = max(float(values.max()), -float(values.min()), 0.0)  # here, not on the console: float16 is slow to scan
    header = {"kind": "map", "run": str(run), "index": int(index), "name": name,
              "shape": [int(n) for n in half.shape], "dtype": "<f2", "affine": a.tolist(), "peak": peak}
    return encode_blob(header, half.data.cast("B"))


def map_from_parts(header: dict[str, Any], payload: memoryview | bytes) -> tuple[np.ndarray, np.ndarray, float]:
    """Check a map frame's header against its payload: ``(data, affine, peak)`` with ``data`` a read-only view
    (float16 as sent: the console converts only the slices it draws) and ``peak`` its largest |value|; raises
    :class:`FrameError`."""
    where = f"map {header.get('name')!r} of {header.get('run')!r}#{header.get('index')!r}"
    if header.get("kind") != "map":
        raise FrameError(f"expected a map frame, got kind {header.get('kind')!r}")
    name, run, index = header.get("name"), header.get("run"), header.get("index")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_MAP_NAME or not isinstance(run, str) \
            or not isinstance(index, int) or isinstance(index, bool):
        raise FrameError(f"{where}: run and name must be strings (name up to {MAX_MAP_NAME}) and index an integer")
    dtype, shape = header.get("dtype"), header.get("shape")
    if dtype not in MAP_DTYPES:
        raise FrameError(f"{where}: dtype {dtype!r} is not one of {sorted(MAP_DTYPES)}")
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= MAX_DIM for s in shape)):
        raise FrameError(f"{where}: shape must be three positive integers up to {MAX_DIM}, got {shape!r}")
    expected = math.prod(shape) * np.dtype(dtype).itemsize
    if memoryview(payload).nbytes != expected:
        raise FrameError(f"{where}: {memoryview(payload).nbytes} data bytes but shape {shape} of {dtype} "
                         f"needs {expected}")
    try:
        affine = np.asarray(header.get("affine"), dtype=np.float64)
    except (TypeError, ValueError):
        raise FrameError(f"{where}: affine is not a 4x4 matrix of numbers") from None
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise FrameError(f"{where}: affine must be a finite 4x4 matrix")
    peak = header.get("peak")
    if not isinstance(peak, (int, float)) or isinstance(peak, bool) or not math.isfinite(peak) or peak < 0:
        raise FrameError(f"{where}: peak must be a finite number >= 0, got {peak!r}")
    return np.frombuffer(payload, dtype=np.dtype(dtype)).reshape(shape), affine, float(peak)
