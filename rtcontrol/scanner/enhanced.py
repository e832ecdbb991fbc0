"""Enhanced multi-frame MR (Siemens XA): one file per volume, one frame per slice.

Geometry lives in the functional groups: orientation and pixel spacing usually in the shared
group, each frame's ImagePositionPatient in its per-frame group. Frames are ordered in space by
the projection of their position on the slice normal (frame order is not trusted); slice timing
comes from Siemens' per-frame slice time (0021,1104) relative to the earliest frame, as dcm2niix
takes it, else from each frame's FrameAcquisitionDateTime (stamped on a 2.5 ms clock: up to
2.5 ms early against the slice time on the XA30 fixture); the volume index from the
TemporalPositionIndex (else AcquisitionNumber).

Speed: pydicom would build ~3000 elements a file from the functional groups (about 20 ms). The
groups are parsed in full once per series; for the following volumes the per-frame positions,
times and temporal index are read straight from the group bytes, and anything unexpected (a count
that does not match the frames, implicit VR, differing scaling) falls back to the full parse.
"""

from __future__ import annotations

import re
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from io import BytesIO
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from rtcontrol.scanner.dicomfile import DicomFile
from rtcontrol.scanner.errors import CorruptFile
from rtcontrol.scanner.facts import header_facts
from rtcontrol.scanner.geometry import affine_lps_to_ras, dt_seconds, ms_to_s, orientation
from rtcontrol.scanner.sidecar import series_name
from rtcontrol.scanner.volume import Volume

#: Private creator of Siemens XA's per-frame block (0021,11xx): slice time, phase-encoding polarity.
SIEMENS_SDI = "SIEMENS MR SDI 02"


def _item(group: Dataset | None, seq: str) -> Dataset | None:
    if group is None or seq not in group:
        return None
    value = group[seq].value
    return value[0] if value else None


def _attr(shared: Dataset | None, frame: Dataset | None, seq: str, attr: str) -> Any:
    """An attribute from the per-frame group, else the shared group."""
    for group in (frame, shared):
        item = _item(group, seq)
        if item is not None and attr in item:
            return item[attr].value
    return None


@dataclass(frozen=True)
class _Series:
    """Facts shared by every volume of an enhanced series (from one full parse of its groups)."""

    row: np.ndarray
    col: np.ndarray
    normal: np.ndarray
    spacing: tuple[float, float]
    fallback_gap: float
    slope: float
    inter: float
    facts: dict[str, Any]
    scale_texts: frozenset[str] | None = None  # RescaleSlope/Intercept texts the byte scan saw


_SERIES: OrderedDict[tuple, _Series] = OrderedDict()
_LOCK = threading.Lock()


def clear_cache() -> None:
    with _LOCK:
        _SERIES.clear()


@dataclass
class _Frames:
    positions: np.ndarray  # (n, 3) ImagePositionPatient per frame, LPS mm
    times: np.ndarray  # (n,) FrameAcquisitionDateTime, seconds since midnight (nan if absent)
    temporal: int | None  # TemporalPositionIndex of the first frame (1-based)
    slopes: set[str]  # RescaleSlope/Intercept texts seen per frame
    slice_times: np.ndarray | None = None  # (n,) Siemens' per-frame slice time (0021,1104), s; None if absent

    def same_as(self, other: _Frames) -> bool:
        """The byte scan read what the full parse read (positions, timing, temporal index)."""
        def same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
            if a is None or b is None:
                return a is None and b is None
            return bool(np.allclose(a, b, equal_nan=True))

        return (
            same(self.positions, other.positions)
            and same(self.times, other.times)
            and same(self.slice_times, other.slice_times)
            and self.temporal == other.temporal
        )


def read_enhanced(df: DicomFile) -> Volume | list[Volume]:
    ds = df.ds
    n = int(ds.get("NumberOfFrames", 1) or 1)
    key = (str(ds.get("SeriesInstanceUID", "")), int(ds.Rows), int(ds.Columns), n)
    with _LOCK:  # read_file runs in a thread pool
        series = _SERIES.get(key)
    frames = _scan_frames(df, n) if series is not None else None
    if series is None or frames is None or frames.slopes != series.scale_texts:
        series, frames = _parse_groups(df, n)  # first volume, or anything the scan cannot vouch for
        scan = _scan_frames(df, n)
        if scan is not None and scan.same_as(frames):
            series = replace(series, scale_texts=frozenset(scan.slopes))  # the scan is good for this series
        with _LOCK:
            _SERIES[key] = series
            while len(_SERIES) > 16:
                _SERIES.popitem(last=False)
    proj = frames.positions @ series.normal
    if n > 1 and len(np.unique(np.round(proj, 3))) < n:  # several volumes or echoes in one file
        return _read_multi(df, n, series, frames)
    acq = ds.get("AcquisitionNumber")
    if frames.temporal is not None:
        index = frames.temporal - 1
    elif acq not in (None, ""):
        index = int(acq) - 1
    else:
        index = 0
    return _volume(df, series, frames, np.arange(n), df.pixels(), index)


def _volume(df: DicomFile, series: _Series, frames: _Frames, idx: np.ndarray, pixels: np.ndarray, index: int,
            echo: tuple[int, float | None] | None = None) -> Volume:  # fmt: skip
    """The frames ``idx`` of the file (one stack: distinct positions) as a Volume. ``echo``: (number,
    echo time in ms) when the file holds several echoes: the run is named ``<series>_e<number>``."""
    ds, path = df.ds, df.path
    positions, times = frames.positions[idx], frames.times[idx]
    proj = positions @ series.normal
    order = np.argsort(proj, kind="stable")
    n = len(idx)
    if n > 1 and np.min(np.diff(proj[order])) < 1e-3:
        raise CorruptFile(path, f"frames share a slice position in volume {index}: not one stack per volume and echo")
    step = (positions[order[-1]] - positions[order[0]]) / (n - 1) if n > 1 else series.normal * series.fallback_gap
    affine = affine_lps_to_ras(series.row, series.col, series.spacing, step, positions[order[0]])
    stack = pixels[idx[order]]  # (k, row, col): one copy, k in spatial order
    vendor = frames.slice_times[idx] if frames.slice_times is not None else None
    rel = _slice_times(vendor, times)
    timing = None if rel is None else tuple(round(float(rel[o]), 6) for o in order)
    acq = ds.get("AcquisitionNumber")
    header = dict(series.facts)
    acq_dt = str(ds.get("AcquisitionDateTime", "") or "")
    header["AcquisitionTime"] = acq_dt[8:] or None
    header["AcquisitionNumber"] = int(acq) if acq not in (None, "") else None
    run, uid = series_name(series.facts), str(ds.get("SeriesInstanceUID", ""))
    if echo is not None:
        run, uid = f"{run}_e{echo[0]}", f"{uid}_e{echo[0]}"
        if echo[1] is not None:
            header["EchoTime"] = ms_to_s(echo[1])
    return Volume(
        data=stack.transpose(2, 1, 0),
        affine=affine,
        run=run,
        index=max(index, 0),
        tr=series.facts.get("RepetitionTime"),
        slice_timing=timing,
        scl_slope=series.slope,
        scl_inter=series.inter,
        acquisition_time=float(np.nanmin(times)) if not np.isnan(times).all() else dt_seconds(acq_dt),
        header=header,
        series_uid=uid,
    )


def _read_multi(df: DicomFile, n: int, series: _Series, frames: _Frames) -> list[Volume]:
    """An enhanced file holding several volumes (temporal positions) and/or echoes: one Volume per
    (echo, temporal position), each echo a series of its own (``_e1``, ``_e2`` ... as dcm2niix names them)."""
    full = pydicom.dcmread(BytesIO(df.raw), stop_before_pixels=True, force=True)
    per_frame = full.get("PerFrameFunctionalGroupsSequence") or []
    shared_seq = full.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    if len(per_frame) != n:
        raise CorruptFile(df.path, f"enhanced MR with {len(per_frame)} per-frame groups for {n} frames")
    echo_times, temporals = [], []
    for frame in per_frame:
        te = _attr(shared, frame, "MREchoSequence", "EffectiveEchoTime")
        number = _attr(shared, frame, "MREchoSequence", "EchoNumbers")
        echo_times.append(round(float(te), 4) if te not in (None, "") else None)
        tpi = _attr(None, frame, "FrameContentSequence", "TemporalPositionIndex")
        temporals.append(int(tpi) if tpi not in (None, "") else None)
        if te in (None, "") and number not in (None, ""):
            echo_times[-1] = -float(number)  # no echo time: order by echo number
    echo_keys = sorted({e for e in echo_times if e is not None})
    proj = np.round(frames.positions @ series.normal, 3)
    groups: dict[tuple[int, int], list[int]] = {}
    seen: dict[tuple[int, float], int] = {}
    for f in range(n):
        te_f = echo_times[f]
        e = echo_keys.index(te_f) if te_f is not None else 0
        t = temporals[f]
        if t is None:  # no temporal index: the n-th frame at a position (per echo) is volume n
            t = seen.get((e, proj[f]), 0) + 1
            seen[(e, proj[f])] = t
        groups.setdefault((e, t), []).append(f)
    sizes = {len(v) for v in groups.values()}
    if len(sizes) != 1:
        raise CorruptFile(df.path, f"{n} frames do not split into equal volumes by echo and temporal position "
                                   f"(volume sizes {sorted(sizes)})")  # fmt: skip
    pixels = df.pixels()
    several = len(echo_keys) > 1
    out = []
    for (e, t), idx in sorted(groups.items()):
        echo = (e + 1, echo_keys[e] if echo_keys[e] >= 0 else None) if several else None
        out.append(_volume(df, series, frames, np.asarray(idx), pixels, t - 1, echo))
    return out


def _parse_groups(df: DicomFile, n: int) -> tuple[_Series, _Frames]:
    """The full pydicom parse of the functional groups (~3000 elements: the slow, sure path)."""
    path = df.path
    try:
        full = pydicom.dcmread(BytesIO(df.raw), stop_before_pixels=True, force=True)
    except Exception as exc:
        raise CorruptFile(path, f"functional groups unreadable ({exc})") from exc
    per_frame = full.get("PerFrameFunctionalGroupsSequence")
    shared_seq = full.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    if not per_frame or len(per_frame) != n:
        raise CorruptFile(path, f"enhanced MR with {len(per_frame or [])} per-frame groups for {n} frames")
    first = per_frame[0]
    iop = _attr(shared, first, "PlaneOrientationSequence", "ImageOrientationPatient")
    spacing = _attr(shared, first, "PixelMeasuresSequence", "PixelSpacing")
    if iop is None or spacing is None:
        raise CorruptFile(path, "enhanced MR without PlaneOrientation/PixelMeasures functional groups")
    row, col, normal = orientation(iop)
    positions = np.empty((n, 3))
    times = np.full(n, np.nan)
    slopes: set[str] = set()
    slice_times = np.full(n, np.nan)
    for f, frame in enumerate(per_frame):
        ipp = _attr(None, frame, "PlanePositionSequence", "ImagePositionPatient")
        if ipp is None:
            raise CorruptFile(path, f"frame {f + 1} has no PlanePositionSequence/ImagePositionPatient")
        positions[f] = [float(x) for x in ipp]
        t = dt_seconds(_attr(None, frame, "FrameContentSequence", "FrameAcquisitionDateTime"))
        if t is not None:
            times[f] = t
        slice_times[f] = _siemens_slice_time(frame)
        slopes.add(str(_attr(shared, frame, "PixelValueTransformationSequence", "RescaleSlope")))
    if len(slopes) > 1:
        raise CorruptFile(path, f"frames scaled differently ({sorted(slopes)}): not supported")
    slope = _attr(shared, first, "PixelValueTransformationSequence", "RescaleSlope")
    inter = _attr(shared, first, "PixelValueTransformationSequence", "RescaleIntercept")
    temporal = _attr(None, first, "FrameContentSequence", "TemporalPositionIndex")
    gap = (
        _attr(shared, first, "PixelMeasuresSequence", "SpacingBetweenSlices")
        or _attr(shared, first, "PixelMeasuresSequence", "SliceThickness")
        or 1.0
    )
    series = _Series(
        row,
        col,
        normal,
        (float(spacing[0]), float(spacing[1])),
        float(gap),
        float(slope) if slope not in (None, "") else 1.0,
        float(inter) if inter not in (None, "") else 0.0,
        _facts(full, shared, first, df.raw[: df.groups[1]] if df.groups[1] else b""),
    )
    temporal_index = int(temporal) if temporal not in (None, "") else None
    stimes = None if np.isnan(slice_times).any() else slice_times
    return series, _Frames(positions, times, temporal_index, set(), stimes)


#: Siemens' per-frame slice time is trusted when it agrees with FrameAcquisitionDateTime this closely (s).
SLICE_TIME_AGREEMENT = 0.005


def _slice_times(vendor: np.ndarray | None, stamps: np.ndarray) -> np.ndarray | None:
    """Each frame's time from the volume's first (s): Siemens' per-frame slice time (0021,1104), exact,
    when it agrees with the frames' FrameAcquisitionDateTime; else the FrameAcquisitionDateTime (on a
    2.5 ms clock). Simultaneous (multiband) slices share a time in both. The first volume of an XA60
    series holds slice times on another clock (0.205, 0, 0.2475...) while its frame times are right."""
    frame_rel = None if np.isnan(stamps).any() else stamps - stamps.min()
    vendor_rel = None if vendor is None or np.isnan(vendor).any() else vendor - vendor.min()
    if vendor_rel is not None and (frame_rel is None or np.abs(vendor_rel - frame_rel).max() <= SLICE_TIME_AGREEMENT):
        return vendor_rel
    return frame_rel


def _siemens_slice_time(frame: Dataset) -> float:
    """Siemens' slice time of one frame, (0021,1104) in the per-frame (0021,11FE) item, seconds; nan if absent."""
    try:
        item = frame.private_block(0x0021, SIEMENS_SDI)[0xFE].value[0]
        return float(item.private_block(0x0021, SIEMENS_SDI)[0x04].value)
    except (KeyError, ValueError, IndexError, TypeError):
        return float("nan")


def _scan_frames(df: DicomFile, n: int) -> _Frames | None:
    """Per-frame position, time and temporal index read straight from the group bytes.

    Explicit VR little endian only; every element must appear exactly once per frame, else None
    (and the caller parses the groups in full). Values are checked by the reader's sanity rules.
    """
    lo, hi = df.groups
    if not df.explicit_little or hi <= lo:
        return None
    region = df.raw[lo:hi]
    ipps = _values(region, b"\x20\x00\x32\x00DS")
    times = _values(region, b"\x18\x00\x74\x90DT")
    tpis = _values(region, b"\x20\x00\x28\x91UL")
    stimes = _values(region, b"\x21\x00\x04\x11DS")  # Siemens' slice time; the full parse vouches for the creator
    slopes = _values(region, b"\x28\x00\x53\x10DS") + _values(region, b"\x28\x00\x52\x10DS")
    if len(ipps) != n or len(times) not in (0, n) or len(tpis) not in (0, n) or len(stimes) not in (0, n):
        return None
    try:
        positions = np.array([[float(x) for x in v.decode("ascii").split("\\")] for v in ipps], dtype=np.float64)
    except ValueError:
        return None
    if positions.shape != (n, 3):
        return None
    secs = np.array([dt_seconds(v.decode("ascii")) or np.nan for v in times]) if times else np.full(n, np.nan)
    try:
        slice_times = np.array([float(v.decode("ascii")) for v in stimes]) if stimes else None
    except ValueError:
        return None
    temporal = struct.unpack("<I", tpis[0])[0] if tpis and len(tpis[0]) == 4 else None
    return _Frames(positions, secs, temporal, {v.decode("ascii").strip() for v in slopes}, slice_times)


def _values(region: bytes, head: bytes) -> list[bytes]:
    """Values of every explicit-VR element starting with ``head`` (tag + 2-byte VR, 2-byte length);
    text values lose their padding, binary ones (UL) are kept whole."""
    out = []
    text = head[4:6] != b"UL"
    at = region.find(head)
    while at >= 0:
        (length,) = struct.unpack_from("<H", region, at + 6)
        value = region[at + 8 : at + 8 + length]
        out.append(value.rstrip(b"\x00 ") if text else value)
        at = region.find(head, at + 8 + length)
    return out


_MULTIBAND = re.compile(rb"sSliceAcceleration\.lMultiBandFactor\s*=\s*(\d+)")


def _multiband(ds: Dataset, shared: Dataset | None, frame: Dataset, protocol: bytes) -> int:
    """The multiband factor: ParallelReductionFactorOutOfPlane (0018,9155) when above 1; else the
    ASCCONV protocol text's sSliceAcceleration.lMultiBandFactor (XA60 writes 1 in the header for
    SMS 2); else 'MBn' in ImageComments. 1 when none says more."""
    for value in (
        _attr(shared, frame, "MRModifierSequence", "ParallelReductionFactorOutOfPlane"),
        (m.group(1) if (m := _MULTIBAND.search(protocol)) else None),
        (c.group(1) if (c := re.search(r"MB(\d+)", str(ds.get("ImageComments", "") or ""))) else None),
    ):
        try:
            mb = int(float(value))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if mb > 1:
            return mb
    return 1


def _facts(ds: Dataset, shared: Dataset | None, frame: Dataset, protocol: bytes = b"") -> dict[str, Any]:
    tr = _attr(shared, frame, "MRTimingAndRelatedParametersSequence", "RepetitionTime")
    flip = _attr(shared, frame, "MRTimingAndRelatedParametersSequence", "FlipAngle")
    te = _attr(shared, frame, "MREchoSequence", "EffectiveEchoTime")
    thick = _attr(shared, frame, "PixelMeasuresSequence", "SliceThickness")
    gap = _attr(shared, frame, "PixelMeasuresSequence", "SpacingBetweenSlices") or ds.get("SpacingBetweenSlices")
    frame_type = _attr(shared, frame, "MRImageFrameTypeSequence", "FrameType")
    mb = _multiband(ds, shared, frame, protocol)
    acq_dt = str(ds.get("AcquisitionDateTime", "") or "")
    return header_facts(
        ds,
        "siemens_enhanced",
        RepetitionTime=ms_to_s(tr),
        EchoTime=ms_to_s(te),
        FlipAngle=float(flip) if flip not in (None, "") else None,
        SliceThickness=float(thick) if thick not in (None, "") else None,
        SpacingBetweenSlices=float(gap) if gap not in (None, "") else None,
        ImageType=[str(x) for x in (frame_type or ds.get("ImageType") or [])] or None,
        AcquisitionTime=acq_dt[8:] or None,
        MultibandAccelerationFactor=mb if mb > 1 else None,
        PhaseEncodingDirection=_pe_direction(shared, frame),
    )


def _pe_direction(shared: Dataset | None, frame: Dataset) -> str | None:
    """Axis from MRFOVGeometry; polarity from Siemens' per-frame private (0021,111C), as dcm2niix."""
    axis = {"ROW": "i", "COL": "j", "COLUMN": "j"}.get(
        str(_attr(shared, frame, "MRFOVGeometrySequence", "InPlanePhaseEncodingDirection") or "").strip().upper()
    )
    if axis is None:
        return None
    try:
        item = frame.private_block(0x0021, SIEMENS_SDI)[0xFE].value[0]
        positive = item.private_block(0x0021, SIEMENS_SDI)[0x1C].value
    except (KeyError, ValueError, IndexError, TypeError):
        return None
    return axis if int(positive) == 1 else axis + "-"
