"""Classic one-file-per-slice DICOM (GE, Philips, Siemens non-mosaic) to :class:`SliceImage`.

What each slice needs for assembly, and where vendors keep it:

* position in space: ImagePositionPatient projected on the slice normal (IOP cross product);
* position in time (0-based ``temporal_index``): TemporalPositionIdentifier (Philips; any vendor
  that writes it; an ASL run's control and label images share one, so each becomes two volumes,
  control first, by MRImageLabelType (2005,1429) or ImageType, as dcm2niix orders them); Siemens:
  AcquisitionNumber; GE writes neither for fMRI but numbers images
  volume after volume, so ``(InstanceNumber - 1) // slices per volume`` with the slice count from
  GE's LocationsInAcquisition; the assembler checks that the slice positions of each volume are
  distinct, so a wrong count cannot silently mix volumes;
* slices per volume: Philips (2001,1018), GE (0021,104F), else ImagesInAcquisition;
* Philips private scaling: dcm2niix keeps stored values with
  ``scl_slope = 1 / ScaleSlope``, ``scl_inter = RescaleIntercept / (RescaleSlope * ScaleSlope)``
  (the "floating point" values, PMC3998685); other vendors: RescaleSlope/Intercept;
* GE phase encoding: column axis, polarity from (0018,9034) or the (0043,102A) header, as dcm2niix;
* GE slice timing: the gzipped protocol block (0025,101B) gives SLICEORDER (0 sequential,
  1 interleaved) and the HyperBand factor MBACCEL (else (0043,10B6)); ``ceil(n / MB)`` excitations
  are spaced over the TR in that order and slices ``n / MB`` apart share one, indexed by
  InStackPositionNumber (dcm2niix's rule, release quirks included). The per-slice RTIA timer
  (0021,105E) is not used: its first volume holds zeros on real HyperBand data.
"""

from __future__ import annotations

import gzip
import re
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from rtcontrol.scanner.dicomfile import DicomFile
from rtcontrol.scanner.errors import CorruptFile
from rtcontrol.scanner.facts import header_facts, manufacturer
from rtcontrol.scanner.geometry import ms_to_s, orientation, tm_seconds
from rtcontrol.scanner.volume import SliceImage


def _private(ds: Dataset, group: int, creator: str, element: int) -> Any:
    try:
        return ds.private_block(group, creator)[element].value
    except (KeyError, ValueError):
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class _SeriesFacts:
    """What every slice of a series shares: worked out once per series (it costs ~2 ms a file)."""

    vendor: str
    n_slices: int | None
    tr: float | None
    facts: dict[str, Any]
    normal: np.ndarray
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]


_SERIES: OrderedDict[tuple, _SeriesFacts] = OrderedDict()
_LOCK = threading.Lock()


def _series_facts(df: DicomFile) -> _SeriesFacts:
    ds = df.ds
    iop = ds.get("ImageOrientationPatient")
    spacing = ds.get("PixelSpacing")
    if iop is None or ds.get("ImagePositionPatient") is None or spacing is None:
        raise CorruptFile(df.path,
                          "image without ImagePositionPatient/ImageOrientationPatient/PixelSpacing: no geometry")
    key = (str(ds.get("SeriesInstanceUID", "")), int(ds.Rows), int(ds.Columns), tuple(map(str, iop)),
           tuple(map(str, spacing)))
    with _LOCK:  # read_file runs in a thread pool
        found = _SERIES.get(key)
    if found is not None:
        return found
    vendor = manufacturer(ds)
    n_slices = _slices_per_volume(ds, vendor)
    tr = ms_to_s(ds.get("RepetitionTime"))
    ge = vendor == "GE"
    mb = ge_multiband(ds) if ge else 1
    facts = header_facts(ds, "slices", PhaseEncodingDirection=_ge_phase_encoding(ds) if ge else None,
                         MultibandAccelerationFactor=mb if mb > 1 else None)
    _, _, normal = orientation(iop)
    found = _SeriesFacts(vendor, n_slices, tr, facts, normal, tuple(float(x) for x in iop),
                         (float(spacing[0]), float(spacing[1])))
    with _LOCK:
        _SERIES[key] = found
        while len(_SERIES) > 32:
            _SERIES.popitem(last=False)
    return found


def read_slice(df: DicomFile) -> SliceImage:
    ds, path = df.ds, df.path
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise CorruptFile(path, f"multi-frame image ({frames} frames) without per-frame geometry")
    series = _series_facts(df)
    position = np.asarray([float(x) for x in ds.ImagePositionPatient], dtype=np.float64)
    instance = _int(ds.get("InstanceNumber"))
    temporal = _temporal_index(ds, series.vendor, series.n_slices, instance)
    slope, inter = _scaling(ds, series.vendor)
    slice_time = _ge_slice_time(ds, series.n_slices, series.tr) if series.vendor == "GE" else None
    header = dict(series.facts)
    for key in ("AcquisitionTime", "AcquisitionNumber"):
        header.pop(key, None)
        if ds.get(key) not in (None, ""):
            header[key] = str(ds.get(key)) if key == "AcquisitionTime" else _int(ds.get(key))
    pixels = df.pixels()[0].copy()  # own the memory: the file bytes can go
    return SliceImage(
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        pixels=pixels,
        temporal_index=temporal,
        slice_position=float(position @ series.normal),
        acquisition_time=tm_seconds(ds.get("AcquisitionTime")),
        path=path,
        position=position,
        orientation=series.orientation,
        pixel_spacing=series.pixel_spacing,
        slices_per_volume=series.n_slices,
        slice_time=slice_time,
        scl_slope=slope,
        scl_inter=inter,
        instance_number=instance,
        header=header,
        tr=series.tr,
    )


def _slices_per_volume(ds: Dataset, vendor: str) -> int | None:
    candidates: list[Any] = []
    if vendor == "Philips":
        candidates.append(_private(ds, 0x2001, "Philips Imaging DD 001", 0x18))
    if vendor == "GE":
        candidates.append(_private(ds, 0x0021, "GEMS_RELA_01", 0x4F))
        candidates.append(_private(ds, 0x0043, "GEMS_PARM_01", 0x79))
    candidates.append(ds.get("ImagesInAcquisition"))
    for c in candidates:
        n = _int(c)
        if n and n > 0:
            return n
    return None


#: Arterial spin labelling image kinds, in the order their volumes take within one repetition (dcm2niix's).
ASL_KINDS = ("CONTROL", "LABEL")


def asl_kind(ds: Dataset, vendor: str) -> str | None:
    """'CONTROL' or 'LABEL' for an ASL image: Philips' MRImageLabelType (2005,1429), else an ImageType value."""
    if vendor == "Philips" and (0x2005, 0x1429) in ds:
        raw = ds[0x2005, 0x1429].value or ""
        value = (raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)).strip(" \x00").upper()
        kind = {"CONTROL": "CONTROL", "CTL": "CONTROL", "LABEL": "LABEL", "LBL": "LABEL"}.get(value)
        if kind:
            return kind
    for value in ds.get("ImageType") or []:
        if str(value).strip().upper() in ASL_KINDS:
            return str(value).strip().upper()
    return None


def _temporal_index(ds: Dataset, vendor: str, n_slices: int | None, instance: int | None) -> int | None:
    tpi = _int(ds.get("TemporalPositionIdentifier"))
    if tpi is not None and tpi >= 1:
        kind = asl_kind(ds, vendor)  # label/control pairs share a temporal position: two volumes each
        return (tpi - 1) * len(ASL_KINDS) + ASL_KINDS.index(kind) if kind else tpi - 1
    if vendor == "Siemens":
        acq = _int(ds.get("AcquisitionNumber"))
        if acq is not None and acq >= 1:
            return acq - 1
    if vendor == "GE" and n_slices and instance and instance >= 1:
        return (instance - 1) // n_slices
    return None


def _scaling(ds: Dataset, vendor: str) -> tuple[float, float]:
    rs = float(ds.get("RescaleSlope", 1) or 1)
    ri = float(ds.get("RescaleIntercept", 0) or 0)
    if vendor == "Philips":
        ss = _private(ds, 0x2005, "Philips MR Imaging DD 001", 0x0E)
        if ss is not None:
            ss = float(ss[0] if isinstance(ss, (list, tuple)) else ss)
            if ss and np.isfinite(ss) and rs:
                return 1.0 / ss, ri / (rs * ss)
    return rs, ri


@lru_cache(maxsize=16)
def _ge_protocol(block: bytes) -> dict[str, str]:
    """GE's protocol data block: 4-byte length + gzip of 'KEY "value"' lines."""
    for start in (4, 0):
        try:
            text = gzip.decompress(block[start:]).decode("latin-1")
            break
        except (OSError, EOFError):
            continue
    else:
        return {}
    return dict(re.findall(r'^(\w+)\s+"([^"]*)"', text, flags=re.M))


def _ge_phase_encoding(ds: Dataset) -> str | None:
    """GE: axis from InPlanePhaseEncodingDirection; polarity as dcm2niix reads it: (0018,9034)
    LINEAR = flipped, REVERSE_LINEAR = unflipped; else the user-data header (0043,102A): its
    phase-polarity bit, toggled when k-space runs bottom-up; else the protocol's VIEWORDER. In
    our index space (rows not flipped): unflipped is 'j', flipped 'j-'."""
    if str(ds.get("InPlanePhaseEncodingDirection", "")).strip().upper() not in ("COL", "COLUMN"):
        return None
    flipped = _ge_polarity_flipped(ds)
    if flipped is not None:
        return "j-" if flipped else "j"
    block = _private(ds, 0x0025, "GEMS_SERS_01", 0x1B)
    order = _ge_protocol(block).get("VIEWORDER") if isinstance(block, bytes) else None
    return {"0": "j", "1": "j-"}.get(order or "")


def _ge_polarity_flipped(ds: Dataset) -> bool | None:
    reorder = str(ds.get("RectilinearPhaseEncodeReordering", "") or "").strip().upper()
    if reorder[:1] in ("L", "R"):
        return reorder[:1] == "L"
    raw = _private(ds, 0x0043, "GEMS_PARM_01", 0x2A)
    if not isinstance(raw, bytes) or len(raw) < 916:
        return None
    offset = struct.unpack_from("<H", raw, 24)[0]
    if len(raw) < offset + 916:
        return None
    version = struct.unpack_from("<f", raw, offset)[0]
    if not 5.0 <= version <= 40.0:
        return None
    hdr, kydir_at = offset, 0x394
    if version >= 25.002:
        hdr, kydir_at = hdr + 0x4C, kydir_at - 0x8C
    flipped = bool(struct.unpack_from("<h", raw, hdr + 0x30)[0] & 0x4)
    if struct.unpack_from("<h", raw, hdr + kydir_at)[0] == 2:  # bottom-up k-space
        flipped = not flipped
    return flipped


def ge_multiband(ds: Dataset) -> int:
    """GE HyperBand factor: the protocol block's MBACCEL, else the first value of (0043,10B6); 1 if neither."""
    block = _private(ds, 0x0025, "GEMS_SERS_01", 0x1B)
    mb = _int(_ge_protocol(block).get("MBACCEL")) if isinstance(block, bytes) else None
    if not mb:
        value = _private(ds, 0x0043, "GEMS_PARM_01", 0xB6)
        value = value[0] if isinstance(value, (list, tuple, MultiValue)) and len(value) else value
        mb = _int(value)
    return mb if mb and mb > 1 else 1


def _ge_version(ds: Dataset) -> tuple[float, int]:
    """(major version, release) from SoftwareVersions, e.g. 'DV28.0_R02_1947.a' -> (28.0, 2)."""
    text = "\\".join(str(x) for x in (ds.get("SoftwareVersions") or []))
    m = re.search(r"(\d+\.\d+)_(?:R0?(\d+)|EA)", text)
    if not m:
        return 0.0, 0
    return float(m.group(1)), int(m.group(2) or 0)


def ge_excitation_times(n_slices: int, tr: float, order: str, mb: int,
                        version: tuple[float, int]) -> list[float] | None:
    """Slice times in prescribed-stack order for GE EPI (as dcm2niix's sliceTimeGE): ``ceil(n / mb)``
    excitations spread over the TR, sequential (SLICEORDER 0) or interleaved (1); with HyperBand, slices
    ``n / mb`` apart share an excitation. Before release 27.0 R03 an even excitation count gains one;
    from it on, an interleaved even count swaps its last and third-last excitations. None when unknown."""
    major, release = version
    new_release = major >= 27.1 or (int(major) == 27 and release >= 3)
    if mb > 1 and major < 26.0:
        return None  # early HyperBand: no known rule
    shots = -(-n_slices // mb)
    if mb > 1 and not new_release and shots % 2 == 0:
        shots += 1
    step = tr / shots
    if order == "0":
        ranks = list(range(shots))
    else:
        odd_base = (shots - 1) // 2
        ranks = [i // 2 if i % 2 == 0 else odd_base + (i + 1) // 2 for i in range(shots)]
        if mb > 1 and new_release and shots > 2 and shots % 2 == 0:
            ranks[-1], ranks[-3] = ranks[-3], ranks[-1]
    return [round(ranks[p % shots] * step, 6) for p in range(n_slices)]


def _ge_slice_time(ds: Dataset, n_slices: int | None, tr: float | None) -> float | None:
    block = _private(ds, 0x0025, "GEMS_SERS_01", 0x1B)
    stack_pos = _int(ds.get("InStackPositionNumber"))
    if not isinstance(block, bytes) or not n_slices or not tr or not stack_pos or stack_pos > n_slices:
        return None
    order = _ge_protocol(block).get("SLICEORDER")
    if order not in ("0", "1"):
        return None
    times = _ge_times(n_slices, tr, order, ge_multiband(ds), _ge_version(ds))
    return None if times is None else times[stack_pos - 1]


@lru_cache(maxsize=32)
def _ge_times(n_slices: int, tr: float, order: str, mb: int, version: tuple[float, int]) -> list[float] | None:
    return ge_excitation_times(n_slices, tr, order, mb, version)
