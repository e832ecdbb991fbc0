"""The subject agent's messages, without I/O: parsing, validation and onset scheduling.

Two conversations use these JSON objects (one per websocket text frame or per NDJSON line):

* console -> agent (over the pinned TLS link): ``run_start`` (with run settings), ``run_stop``,
  ``feedback`` (run, index, value, timeline), ``message`` and ``clock`` (the console's clock offset);
  the agent answers ``ack``, ``delivery`` (stamps), ``response``, ``run_started``/``error`` and ``state``.
* agent <-> local consumers (display, PsychoPy, jsPsych, MATLAB): ``feedback``, ``message``,
  ``run_start``, ``run_stop`` out; ``response`` and ``displayed`` in, after a ``hello`` that carries the
  agent's consumer secret (:mod:`rtcontrol.subject.secret`).

Every function here is pure so the rules are tested byte for byte, apart from sockets.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass, field
from typing import Any

from rtcontrol.link.codec import FrameError, loads_json

PROTOCOL = "rtcontrol-subject/1"
VERSION = 1

#: Largest control frame or consumer line accepted (a feedback value is meant to be small).
MAX_FRAME_BYTES = 64 * 1024
#: Largest JSON value of one feedback item once encoded.
MAX_VALUE_BYTES = 16 * 1024
#: Longest onset delay accepted: feedback later than this after its volume is no longer feedback.
MAX_ONSET_DELAY_S = 30.0
#: Longest TR accepted for TR-boundary onsets.
MAX_TR_S = 30.0

class OnsetMode(enum.StrEnum):
    """When the agent hands a feedback value on (see :class:`Onset`); the value is the wire word.

    The console's settings say ``next_tr`` for the TR boundary (the word users write); it names the
    same member, so neither end translates by hand."""

    IMMEDIATE = "immediate"
    NEXT_TR = "tr"
    DELAY = "delay"

    @classmethod
    def _missing_(cls, value: object) -> OnsetMode | None:
        return cls.NEXT_TR if value == "next_tr" else None


ONSET_MODES = tuple(m.value for m in OnsetMode)

CONSOLE_TO_AGENT = ("run_start", "run_stop", "feedback", "message", "clock", "ping")
CONSUMER_TO_AGENT = ("response", "displayed", "hello", "ping")
AGENT_TO_CONSOLE = ("ack", "delivery", "response", "state", "run_started", "run_stopped", "error", "pong")


class ProtocolError(FrameError):
    """A frame or line that is not a valid message; the text says what and where. The subject agent's
    name for the link's :class:`FrameError` (any FrameError from the codec is re-raised as one)."""


def encode(msg: dict[str, Any]) -> str:
    """Compact JSON; NaN and infinities are refused (not valid JSON for browsers or MATLAB)."""
    return json.dumps(msg, separators=(",", ":"), allow_nan=False)


def decode(raw: str | bytes, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    """Parse one frame/line into a dict with a known ``type``, or raise :class:`ProtocolError`."""
    size = len(raw)
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(f"{where}: message of {size} bytes is over the {MAX_FRAME_BYTES}-byte limit")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"{where}: message is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        msg = loads_json(raw, parse_constant=_refuse_constant)  # refuses deep nesting (no RecursionError)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"{where}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except FrameError as exc:  # also the ProtocolError of a refused constant
        raise ProtocolError(f"{where}: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"{where}: expected a JSON object, got {type(msg).__name__}")
    version = msg.get("v", VERSION)
    if version != VERSION:
        raise ProtocolError(f"{where}: protocol version {version!r}, this program speaks {VERSION}; "
                            "use the same rtcontrol release on the console and the presentation PC")
    kind = msg.get("type")
    if kind not in allowed:
        raise ProtocolError(f"{where}: unknown message type {kind!r}; expected one of {', '.join(allowed)}")
    return msg


def _refuse_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not allowed in messages")


#: Largest hello line accepted before a consumer is authenticated.
MAX_HELLO_BYTES = 4096
HELLO_HINT = ('a stimulus program must begin with {"type": "hello", "name": "<its name>", "secret": "<secret>"}; '
              "the secret is in the file consumer.secret in the subject agent's home folder (the agent prints "
              "where when it starts; the jsPsych page gets it in its URL)")


def parse_consumer_hello(raw: str | bytes, where: str) -> tuple[str | None, Any]:
    """A consumer's first line: ``(name or None, secret as sent)``; the caller checks the secret."""
    if len(raw) > MAX_HELLO_BYTES:
        raise ProtocolError(f"{where}: a hello of {len(raw)} bytes is over the {MAX_HELLO_BYTES}-byte limit; "
                            f"{HELLO_HINT}")
    try:
        msg = decode(raw, where, CONSUMER_TO_AGENT)
    except ProtocolError as exc:
        raise ProtocolError(f"{exc}; {HELLO_HINT}") from None
    if msg["type"] != "hello":
        raise ProtocolError(f"{where}: {msg['type']!r} before hello; {HELLO_HINT}")
    if "secret" not in msg:
        raise ProtocolError(f"{where}: hello without 'secret'; {HELLO_HINT}")
    name = msg.get("name")
    if name is not None and (not isinstance(name, str) or not name or len(name) > 40
                             or not name.replace("-", "").replace("_", "").isalnum()):
        raise ProtocolError(f"{where}: hello 'name' must be 1-40 letters, digits, - or _")
    return name, msg["secret"]


@dataclass(frozen=True)
class Feedback:
    """One feedback value for one volume; ``timeline`` stamps are in the console's clock."""

    run: str
    index: int
    value: Any
    timeline: dict[str, float] = field(default_factory=dict)
    acquired: float | None = None  # console clock: when the volume was acquired (if known)
    late: bool = False  # resent after the console link was down


def parse_feedback(msg: dict[str, Any], where: str) -> Feedback:
    run = msg.get("run")
    index = msg.get("index")
    if not isinstance(run, str) or not run:
        raise ProtocolError(f"{where}: feedback needs a non-empty string 'run', got {run!r}")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ProtocolError(f"{where}: feedback needs a volume 'index' >= 0, got {index!r}")
    if "value" not in msg:
        raise ProtocolError(f"{where}: feedback for {run} volume {index} has no 'value'")
    value = msg["value"]
    check_value(value, f"{where}: feedback for {run} volume {index}")
    timeline = msg.get("timeline") or {}
    if not isinstance(timeline, dict) or not all(
        isinstance(k, str) and _is_number(v) for k, v in timeline.items()
    ):
        raise ProtocolError(f"{where}: feedback 'timeline' must map stage names to seconds")
    acquired = msg.get("acquired")
    if acquired is not None and not _is_number(acquired):
        raise ProtocolError(f"{where}: feedback 'acquired' must be seconds, got {acquired!r}")
    return Feedback(run, index, value, {k: float(v) for k, v in timeline.items()},
                    None if acquired is None else float(acquired), bool(msg.get("late", False)))


def check_value(value: Any, where: str) -> None:
    """A feedback value is a number or a small JSON object/list/string."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ProtocolError(f"{where}: value {value!r} is not a finite number")
        return
    try:
        size = len(encode(value))
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"{where}: value is not JSON ({exc})") from None
    if size > MAX_VALUE_BYTES:
        raise ProtocolError(f"{where}: value is {size} bytes of JSON, over the {MAX_VALUE_BYTES}-byte limit")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# --------------------------------------------------------------------------------------------- run settings


@dataclass(frozen=True)
class Onset:
    """When a feedback value is handed to the consumers.

    ``immediate``: as soon as it arrives. ``tr``: at the next TR boundary counted from the volume's
    acquisition time (or from run start when the console did not send one). ``delay``: ``delay`` seconds
    after the volume's acquisition time (run start + index x TR when not sent); if that moment has already
    passed the value goes out at once and its stamps say ``onset_missed``.
    """

    mode: OnsetMode = OnsetMode.IMMEDIATE
    tr: float | None = None
    delay: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", OnsetMode(self.mode))  # a plain word from a test or an older caller


@dataclass(frozen=True)
class Display:
    """What the built-in display draws; colours are CSS/Qt names or ``#rrggbb``."""

    kind: str = "thermometer"  # "thermometer" | "bar" | "text" | "none"
    background: str = "#000000"
    foreground: str = "#ffffff"
    fill: str = "#2ecc71"
    low: float = 0.0
    high: float = 1.0
    fixation: bool = True
    text: str = ""


@dataclass(frozen=True)
class RunSettings:
    run: str
    onset: Onset = Onset()
    display: Display = Display()
    t0: float | None = None  # console clock: acquisition start of volume 0 (if known)
    extra: dict[str, Any] = field(default_factory=dict)  # passed to consumers unchanged

    def to_consumer(self) -> dict[str, Any]:
        """What local consumers see of the run settings (clock-free)."""
        return {
            "run": self.run,
            "onset": {"mode": self.onset.mode, "tr": self.onset.tr, "delay": self.onset.delay},
            "display": self.display.__dict__.copy(),
            "extra": self.extra,
        }


DISPLAY_KINDS = ("thermometer", "bar", "text", "none")


def parse_run_settings(msg: dict[str, Any]) -> RunSettings:
    """Validate a ``run_start`` message; raise :class:`ProtocolError` with a message an operator can act on."""
    run = msg.get("run")
    if not isinstance(run, str) or not run:
        raise ProtocolError(f"run_start needs a non-empty string 'run', got {run!r}")
    settings = msg.get("settings") or {}
    if not isinstance(settings, dict):
        raise ProtocolError(f"run {run}: 'settings' must be an object")
    onset = _parse_onset(run, settings.get("onset") or {}, settings.get("tr"))
    display = _parse_display(run, settings.get("display") or {})
    t0 = msg.get("t0", settings.get("t0"))
    if t0 is not None and not _is_number(t0):
        raise ProtocolError(f"run {run}: 't0' must be seconds in the console clock, got {t0!r}")
    extra = settings.get("extra") or {}
    if not isinstance(extra, dict):
        raise ProtocolError(f"run {run}: 'extra' settings must be an object")
    return RunSettings(run, onset, display, None if t0 is None else float(t0), extra)


def _parse_onset(run: str, onset: Any, run_tr: Any) -> Onset:
    if isinstance(onset, str):
        onset = {"mode": onset}
    if not isinstance(onset, dict):
        raise ProtocolError(f"run {run}: 'onset' must be an object like {{'mode': 'delay', 'delay': 1.0}}")
    try:
        mode = OnsetMode(onset.get("mode", "immediate"))
    except (ValueError, TypeError):
        raise ProtocolError(f"run {run}: onset mode {onset.get('mode')!r} is not one of "
                            f"{', '.join(ONSET_MODES)}") from None
    tr = onset.get("tr", run_tr)
    if tr is not None:
        if not _is_number(tr) or tr <= 0:
            raise ProtocolError(f"run {run}: TR must be a positive number of seconds, got {tr!r}")
        if tr > MAX_TR_S:
            raise ProtocolError(f"run {run}: TR of {tr} s is over the {MAX_TR_S:g} s limit")
        tr = float(tr)
    delay = onset.get("delay", 0.0)
    if mode is OnsetMode.NEXT_TR and tr is None:
        raise ProtocolError(f"run {run}: onset at the next TR boundary needs the TR (settings 'tr' or onset 'tr')")
    if mode == "delay":
        if not _is_number(delay):
            raise ProtocolError(f"run {run}: onset delay must be a number of seconds, got {delay!r}")
        if delay < 0:
            raise ProtocolError(
                f"run {run}: onset delay of {delay} s is negative; feedback cannot be shown before its volume "
                "was acquired"
            )
        if delay > MAX_ONSET_DELAY_S:
            raise ProtocolError(
                f"run {run}: onset delay of {delay} s is over the {MAX_ONSET_DELAY_S:g} s limit; "
                "feedback that late is no longer feedback"
            )
    return Onset(mode, tr, float(delay) if _is_number(delay) else 0.0)


def _parse_display(run: str, d: Any) -> Display:
    if not isinstance(d, dict):
        raise ProtocolError(f"run {run}: 'display' settings must be an object")
    base = Display()
    values: dict[str, Any] = {}
    for key, default in base.__dict__.items():
        if key not in d:
            continue
        v = d[key]
        if isinstance(default, bool):
            ok = isinstance(v, bool)
        elif isinstance(default, float):
            ok = _is_number(v)
            v = float(v) if ok else v
        else:
            ok = isinstance(v, str)
        if not ok:
            raise ProtocolError(f"run {run}: display setting {key!r} = {v!r} should be a {type(default).__name__}")
        values[key] = v
    unknown = set(d) - set(base.__dict__)
    if unknown:
        raise ProtocolError(f"run {run}: unknown display settings {', '.join(sorted(unknown))}")
    out = Display(**{**base.__dict__, **values})
    if out.kind not in DISPLAY_KINDS:
        raise ProtocolError(f"run {run}: display kind {out.kind!r} is not one of {', '.join(DISPLAY_KINDS)}")
    if not out.high > out.low:
        raise ProtocolError(f"run {run}: display scale needs high > low, got low={out.low} high={out.high}")
    return out


def onset_time(onset: Onset, received: float, acquired: float | None, t0: float | None, index: int) -> float:
    """When to deliver (same clock as the inputs); ``received`` when it should go out at once.

    ``acquired`` is the volume's acquisition time if the console sent it; otherwise it is estimated as
    ``t0 + index * TR`` when both are known, else taken to be ``received``.
    """
    if onset.mode == "immediate":
        return received
    ref = acquired
    if ref is None and t0 is not None and onset.tr is not None:
        ref = t0 + index * onset.tr
    if ref is None:
        ref = received
    if onset.mode == "delay":
        return max(received, ref + onset.delay)  # already past: at once (the agent marks it onset_missed)
    assert onset.tr is not None  # parse_run_settings guarantees it for mode "tr"
    if received <= ref:
        return ref
    k = math.ceil((received - ref) / onset.tr - 1e-9)
    return ref + k * onset.tr
