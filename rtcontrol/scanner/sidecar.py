"""BIDS JSON sidecars and series names, shared by ``convert`` and the recorder.

``sidecar(volumes)`` turns the allowlisted header facts of a series into BIDS fields
(RepetitionTime, SliceTiming, EchoTime, FlipAngle, Manufacturer, PhaseEncodingDirection ...),
all in BIDS units (seconds, degrees). Nothing patient-identifying is ever in a Volume's header,
so nothing identifying can reach a sidecar.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rtcontrol import __version__
from rtcontrol.scanner.volume import BIDS_HEADER_FIELDS, Volume

#: Volume.header keys copied to the sidecar under the same (BIDS) name.
BIDS_KEYS = BIDS_HEADER_FIELDS


def series_name(facts: dict[str, Any], fallback: str = "series") -> str:
    """'<SeriesNumber>_<SeriesDescription>' made safe for a file name (e.g. '5_ep2d_Int_HF')."""
    number = facts.get("SeriesNumber")
    desc = facts.get("SeriesDescription") or facts.get("ProtocolName") or ""
    parts = [str(number)] if number not in (None, "") else []
    if desc:
        parts.append(str(desc))
    return sanitize("_".join(parts)) or sanitize(fallback) or "series"


def sanitize(text: str) -> str:
    """Letters, digits, '-', '_' and '.' only; runs of anything else become one '_'."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return out[:120]


def sidecar(volumes: Sequence[Volume]) -> dict[str, Any]:
    """BIDS sidecar fields for a series, from its first volume's facts and the series' timing."""
    if not volumes:
        raise ValueError("a sidecar needs at least one volume")
    first = volumes[0]
    out: dict[str, Any] = {}
    for key in BIDS_KEYS:
        value = first.header.get(key)
        if value not in (None, "", []):
            out[key] = value
    if first.tr is not None:
        out["RepetitionTime"] = first.tr
    timing = series_slice_timing(volumes)
    if timing is not None:
        out["SliceTiming"] = [round(t, 6) for t in timing]
    if first.acquisition_time is not None and "AcquisitionTime" not in out:
        out["AcquisitionTime"] = _clock(first.acquisition_time)
    elif "AcquisitionTime" in out:
        if first.acquisition_time is not None:
            out["AcquisitionTime"] = _clock(first.acquisition_time)
    fmt = first.header.get("SourceFormat")
    if fmt:
        out["SourceFormat"] = fmt
    out["NumberOfVolumes"] = len(volumes)
    out["ConversionSoftware"] = "rtcontrol"
    out["ConversionSoftwareVersion"] = __version__
    return out


def series_slice_timing(volumes: Sequence[Volume], agree: float = 0.001) -> tuple[float, ...] | None:
    """The series' SliceTiming from its volumes (see :func:`consensus_timing`)."""
    return consensus_timing([v.slice_timing for v in volumes[:4]], agree)


def consensus_timing(timings: Sequence[Sequence[float] | None], agree: float = 0.001) -> tuple[float, ...] | None:
    """A run's SliceTiming from its first volumes' (in order): the first that its successor confirms
    (within ``agree`` s), else the second volume's (as dcm2niix), else the first's. A run's first volume can
    carry times off by a clock tick or more (XA60's per-frame slice times; mosaic times when the first volume
    is short, dcm2niix's issue 870; a CMRR multiband mosaic's first file holds single-band times)."""
    for ta, tb in zip(timings[:3], timings[1:4]):
        if (ta is not None and tb is not None and len(ta) == len(tb)
                and max(abs(x - y) for x, y in zip(ta, tb)) <= agree):
            return tuple(ta)
    for t in [*timings[1:2], *timings[:1]]:
        if t is not None:
            return tuple(t)
    return None


def _clock(seconds: float) -> str:
    """Seconds since midnight to BIDS 'hh:mm:ss.ffffff'."""
    h, rem = divmod(float(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{int(h):02d}:{int(m):02d}:{s:09.6f}"


def write_sidecar(path: Path | str, fields: dict[str, Any]) -> Path:
    """Write ``fields`` as pretty JSON (the BIDS convention) and return the path."""
    path = Path(path)
    path.write_text(json.dumps(fields, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
