"""Enhanced multi-frame MR (Siemens XA): one file per volume, one frame per slice.

Geometry lives in the functional groups: orientation and pixel spacing usually in the shared
group, each frame's ImagePositionPatient in its per-frame group. Frames are ordered in space by
the projection of their position on the slice normal (frame order is not trusted); slice timing
comes from each frame's FrameAcquisitionDateTime relative to the earliest frame (what dcm2niix
reports); the volume index from the TemporalPositionIndex (else AcquisitionNumber).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from rtcontrol.scanner.dicomfile import DicomFile
from rtcontrol.scanner.errors import CorruptFile
from rtcontrol.scanner.facts import header_facts
from rtcontrol.scanner.geometry import affine_lps_to_ras, dt_seconds, ms_to_s, orientation
from rtcontrol.scanner.sidecar import series_name
from rtcontrol.scanner.volume import Volume


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


def read_enhanced(df: DicomFile) -> Volume:
    ds, path = df.ds, df.path
    frames = ds.get("PerFrameFunctionalGroupsSequence")
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    n = int(ds.get("NumberOfFrames", 1) or 1)
    if not frames or len(frames) != n:
        raise CorruptFile(path, f"enhanced MR with {len(frames or [])} per-frame groups for {n} frames")
    iop = _attr(shared, frames[0], "PlaneOrientationSequence", "ImageOrientationPatient")
    spacing = _attr(shared, frames[0], "PixelMeasuresSequence", "PixelSpacing")
    if iop is None or spacing is None:
        raise CorruptFile(path, "enhanced MR without PlaneOrientation/PixelMeasures functional groups")
    row, col, normal = orientation(iop)
    positions = np.empty((n, 3))
    times = np.full(n, np.nan)
    for f, frame in enumerate(frames):
        ipp = _attr(None, frame, "PlanePositionSequence", "ImagePositionPatient")
        if ipp is None:
            raise CorruptFile(path, f"frame {f + 1} has no PlanePositionSequence/ImagePositionPatient")
        positions[f] = [float(x) for x in ipp]
        t = dt_seconds(_attr(None, frame, "FrameContentSequence", "FrameAcquisitionDateTime"))
        if t is not None:
            times[f] = t
    proj = positions @ normal
    order = np.argsort(proj, kind="stable")
    if n > 1 and np.min(np.diff(proj[order])) < 1e-3:
        raise CorruptFile(path, "frames share a slice position (several stacks or echoes in one file are not supported)")
    step = (positions[order[-1]] - positions[order[0]]) / (n - 1) if n > 1 else normal * float(
        _attr(shared, frames[0], "PixelMeasuresSequence", "SpacingBetweenSlices")
        or _attr(shared, frames[0], "PixelMeasuresSequence", "SliceThickness")
        or 1.0
    )
    affine = affine_lps_to_ras(row, col, [float(x) for x in spacing], step, positions[order[0]])
    pix = df.pixels()  # (frame, row, col)
    stack = pix[order]  # one copy, k in spatial order
    timing = None
    if not np.isnan(times).any():
        t0 = float(times.min())
        timing = tuple(round(float(times[o]) - t0, 6) for o in order)
    slope = _attr(shared, frames[0], "PixelValueTransformationSequence", "RescaleSlope")
    inter = _attr(shared, frames[0], "PixelValueTransformationSequence", "RescaleIntercept")
    temporal = _attr(None, frames[0], "FrameContentSequence", "TemporalPositionIndex")
    acq = ds.get("AcquisitionNumber")
    if temporal not in (None, ""):
        index = int(temporal) - 1
    elif acq not in (None, ""):
        index = int(acq) - 1
    else:
        index = 0
    facts = _facts(ds, shared, frames[0])
    return Volume(
        data=stack.transpose(2, 1, 0),
        affine=affine,
        run=series_name(facts),
        index=max(index, 0),
        tr=facts.get("RepetitionTime"),
        slice_timing=timing,
        scl_slope=float(slope) if slope not in (None, "") else 1.0,
        scl_inter=float(inter) if inter not in (None, "") else 0.0,
        acquisition_time=float(np.nanmin(times)) if not np.isnan(times).all() else dt_seconds(ds.get("AcquisitionDateTime")),
        header=facts,
        series_uid=str(ds.get("SeriesInstanceUID", "")),
    )


def _facts(ds: Dataset, shared: Dataset | None, frame: Dataset) -> dict[str, Any]:
    tr = _attr(shared, frame, "MRTimingAndRelatedParametersSequence", "RepetitionTime")
    flip = _attr(shared, frame, "MRTimingAndRelatedParametersSequence", "FlipAngle")
    te = _attr(shared, frame, "MREchoSequence", "EffectiveEchoTime")
    thick = _attr(shared, frame, "PixelMeasuresSequence", "SliceThickness")
    gap = _attr(shared, frame, "PixelMeasuresSequence", "SpacingBetweenSlices") or ds.get("SpacingBetweenSlices")
    frame_type = _attr(shared, frame, "MRImageFrameTypeSequence", "FrameType")
    mb = re.search(r"MB(\d+)", str(ds.get("ImageComments", "") or ""))
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
        MultibandAccelerationFactor=int(mb.group(1)) if mb and int(mb.group(1)) > 1 else None,
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
        item = frame.private_block(0x0021, "SIEMENS MR SDI 02")[0xFE].value[0]
        positive = item.private_block(0x0021, "SIEMENS MR SDI 02")[0x1C].value
    except (KeyError, ValueError, IndexError, TypeError):
        return None
    return axis if int(positive) == 1 else axis + "-"
