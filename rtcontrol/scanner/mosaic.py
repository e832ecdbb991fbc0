"""Siemens mosaic: one file per volume, slices tiled in a square grid.

What the file says and where (all checked against dcm2niix on the fixtures):

* tile count: CSA image header ``NumberOfImagesInMosaic``; grid side ``ceil(sqrt(n))``, so odd
  counts leave empty tiles at the end;
* slice direction: CSA ``SliceNormalVector``; step = SpacingBetweenSlices;
* ImagePositionPatient is the corner of the whole mosaic: shifted by half the unused rows and
  columns to the first tile (the well-known mosaic correction, as in nibabel's MosaicWrapper);
* head-to-foot storage (ASCCONV ``sSliceArray.ucImageNumbTra/Sag/Cor = 1``): tiles run against
  the slice normal; they are reversed so ``k`` always increases along the prescribed stack,
  as dcm2niix does;
* slice timing: CSA ``MosaicRefAcqTimes`` (ms) in tile order.

The CSA parse and the geometry do not change between volumes of a series: they are cached per
series and geometry tags, so volume 2..N costs the header parse plus one copy of the pixels.
"""

from __future__ import annotations

import math
import re
import struct
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

with warnings.catch_warnings():  # nibabel.nicom warns on import that its DICOM readers are "experimental"
    warnings.simplefilter("ignore", UserWarning)
    from nibabel.nicom import csareader

from rtcontrol.scanner.dicomfile import DicomFile
from rtcontrol.scanner.errors import CorruptFile
from rtcontrol.scanner.facts import header_facts
from rtcontrol.scanner.geometry import affine_lps_to_ras, ms_to_s, orientation, tm_seconds
from rtcontrol.scanner.volume import Volume

_CACHE_SIZE = 32
_LOCK = threading.Lock()
_CACHE: OrderedDict[tuple, MosaicLayout] = OrderedDict()  # series + geometry tags -> layout
_REVERSED = re.compile(rb"sSliceArray\.ucImageNumb(?:Tra|Sag|Cor)\s*=\s*(0x1|1)\b")
_MULTIBAND = re.compile(rb"sSliceAcceleration\.lMultiBandFactor\s*=\s*(\d+)")


@dataclass(frozen=True)
class MosaicLayout:
    """Per-series facts: how to cut tiles and where they are in the world."""

    n_slices: int
    grid: int
    tile_rows: int
    tile_cols: int
    tile_order: np.ndarray  # mosaic tile number for each k
    affine: np.ndarray
    slice_timing: tuple[float, ...] | None  # of the first volume seen; each volume reads its own
    facts: dict[str, Any]
    csa_tag: Any  # where this series keeps its CSA image header, e.g. (0029,1010)
    reverse: bool


def is_mosaic(ds: Any) -> bool:
    image_type = [str(x).upper() for x in (ds.get("ImageType") or [])]
    return "MOSAIC" in image_type


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


def read_mosaic(df: DicomFile) -> Volume:
    """One mosaic file to a Volume (data [column, row, slice], stored dtype)."""
    ds = df.ds
    layout = _layout(df)
    pix = df.pixels()[0]
    if pix.shape != (layout.grid * layout.tile_rows, layout.grid * layout.tile_cols):
        raise CorruptFile(df.path, f"mosaic is {pix.shape}, expected {layout.grid}x{layout.grid} tiles of "
                                   f"{layout.tile_rows}x{layout.tile_cols}")
    tiles = pix.reshape(layout.grid, layout.tile_rows, layout.grid, layout.tile_cols)
    order = layout.tile_order
    stack = tiles[order // layout.grid, :, order % layout.grid, :]  # (k, row, col): one copy
    acq_no = ds.get("AcquisitionNumber")
    index = int(acq_no) - 1 if acq_no not in (None, "") else 0
    header = dict(layout.facts)
    header["AcquisitionNumber"] = int(acq_no) if acq_no not in (None, "") else None
    header["AcquisitionTime"] = str(ds.get("AcquisitionTime", "") or "") or None
    timing = _slice_timing(ds, layout)
    return Volume(
        data=stack.transpose(2, 1, 0),  # [i=column, j=row, k] view, no copy
        affine=layout.affine,
        run=_run_name(layout.facts),
        index=max(index, 0),
        tr=layout.facts.get("RepetitionTime"),
        slice_timing=timing,
        acquisition_time=tm_seconds(ds.get("AcquisitionTime")),
        header=header,
        series_uid=str(ds.get("SeriesInstanceUID", "")),
    )


def _run_name(facts: dict[str, Any]) -> str:
    from rtcontrol.scanner.sidecar import series_name

    return series_name(facts)


#: What a mosaic's layout depends on: series, matrix, orientation, position, spacing.
_KEY_TAGS = (0x0020000E, 0x00280010, 0x00280011, 0x00200037, 0x00200032, 0x00280030, 0x00180088)


def _key(df: DicomFile) -> tuple:
    """The layout cache's key from the elements' stored bytes (converting them costs ~0.1 ms a file)."""
    ds = df.ds
    out = []
    for tag in _KEY_TAGS:
        element = ds.get_item(tag)
        value = None if element is None else element.value
        out.append(value if value is None or isinstance(value, (bytes, str, int, float)) else str(value))
    return tuple(out)


def _layout(df: DicomFile) -> MosaicLayout:
    key = _key(df)
    with _LOCK:  # read_file runs in a thread pool
        layout = _CACHE.get(key)
        if layout is not None:
            _CACHE.move_to_end(key)
            return layout
    layout = _compute_layout(df)
    with _LOCK:
        _CACHE[key] = layout
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return layout


def _csa_value(csa: dict, name: str, vector: bool = False) -> Any:
    tag = csa.get("tags", {}).get(name)
    if not tag or not tag.get("n_items") or not tag.get("items"):
        return None
    items = tag["items"]
    return [float(x) for x in items] if vector else items[0]


def _compute_layout(df: DicomFile) -> MosaicLayout:
    ds, path = df.ds, df.path
    try:
        csa = csareader.get_csa_header(ds, "image")
    except Exception as exc:
        raise CorruptFile(path, f"Siemens CSA image header unreadable ({exc})") from exc
    if not csa:
        raise CorruptFile(path, "mosaic without a Siemens CSA image header (0029,xx10)")
    n = _csa_value(csa, "NumberOfImagesInMosaic")
    if not n:
        raise CorruptFile(path, "mosaic without CSA NumberOfImagesInMosaic")
    n = int(n)
    rows, cols = int(ds.Rows), int(ds.Columns)
    grid = int(math.ceil(math.sqrt(n)))
    if rows % grid or cols % grid:
        raise CorruptFile(path, f"{rows}x{cols} mosaic does not split into a {grid}x{grid} grid for {n} slices")
    tile_rows, tile_cols = rows // grid, cols // grid
    row_cos, col_cos, cross = orientation(ds.ImageOrientationPatient)
    normal = _csa_value(csa, "SliceNormalVector", vector=True)
    normal = np.asarray(normal, dtype=np.float64) if normal and len(normal) == 3 else cross
    normal = normal / np.linalg.norm(normal)
    spacing_ps = [float(x) for x in ds.PixelSpacing]
    spacing_k = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
    ipp = np.asarray([float(x) for x in ds.ImagePositionPatient], dtype=np.float64)
    # the mosaic's corner -> the first tile's corner
    first = (ipp + col_cos * spacing_ps[0] * (rows - tile_rows) / 2.0
             + row_cos * spacing_ps[1] * (cols - tile_cols) / 2.0)
    step = normal * spacing_k
    phoenix = _phoenix(ds)
    reverse = bool(_REVERSED.search(phoenix))
    order = np.arange(n)
    times = _csa_value(csa, "MosaicRefAcqTimes", vector=True)
    timing = tuple(ms_to_s(t) for t in times[:n]) if times and len(times) >= n else None
    if reverse:
        order = order[::-1].copy()
        first = first + step * (n - 1)
        step = -step
        timing = tuple(reversed(timing)) if timing else None
    affine = affine_lps_to_ras(row_cos, col_cos, spacing_ps, step, first)
    mb = _MULTIBAND.search(phoenix)
    facts = header_facts(
        ds,
        "siemens_mosaic",
        PhaseEncodingDirection=_pe_direction(ds, csa),
        MultibandAccelerationFactor=int(mb.group(1)) if mb and int(mb.group(1)) > 1 else None,
    )
    try:
        csa_tag = ds.private_block(0x0029, "SIEMENS CSA HEADER")[0x10].tag
    except (KeyError, ValueError):
        csa_tag = None
    return MosaicLayout(n, grid, tile_rows, tile_cols, order, affine, timing, facts, csa_tag, reverse)


def _slice_timing(ds: Any, layout: MosaicLayout) -> tuple[float, ...] | None:
    """This volume's MosaicRefAcqTimes (s, in k order): they drift by a few ms between volumes."""
    if layout.csa_tag is None or layout.csa_tag not in ds:
        return layout.slice_timing
    times = csa_float_items(ds[layout.csa_tag].value, b"MosaicRefAcqTimes")
    if times is None or len(times) < layout.n_slices:
        return layout.slice_timing
    out = tuple(ms_to_s(t) for t in times[: layout.n_slices])
    return tuple(reversed(out)) if layout.reverse else out


def csa_float_items(csa: bytes, name: bytes) -> list[float] | None:
    """The numeric items of one CSA2 ('SV10') tag, found by name without parsing the rest."""
    if not isinstance(csa, bytes) or csa[:4] != b"SV10":
        return None
    at = csa.find(name + b"\x00")
    if at < 0 or at + 84 > len(csa):
        return None
    vm, _vr, _dt, n_items, _x = struct.unpack_from("<i4s3i", csa, at + 64)
    ptr = at + 84
    out: list[float] = []
    for _ in range(n_items):
        if ptr + 16 > len(csa):
            return None
        item_len = struct.unpack_from("<4i", csa, ptr)[1]
        ptr += 16
        if item_len:
            text = csa[ptr : ptr + item_len].split(b"\x00", 1)[0].strip()
            try:
                out.append(float(text))
            except ValueError:
                return None
        ptr += item_len + (4 - item_len % 4) % 4
    return out


def _phoenix(ds: Any) -> bytes:
    """The raw ASCCONV protocol text in the CSA series header (0029,xx20), or b''."""
    try:
        value = ds.private_block(0x0029, "SIEMENS CSA HEADER")[0x20].value
    except (KeyError, ValueError):
        return b""
    return value if isinstance(value, bytes) else b""


def _pe_direction(ds: Any, csa: dict) -> str | None:
    """BIDS PhaseEncodingDirection in *our* index space (rows not flipped, unlike dcm2niix)."""
    axis = {"ROW": "i", "COL": "j", "COLUMN": "j"}.get(str(ds.get("InPlanePhaseEncodingDirection", "")).strip().upper())
    positive = _csa_value(csa, "PhaseEncodingDirectionPositive")
    if axis is None:
        return None
    if positive in (None, ""):
        return None
    return axis if int(positive) == 1 else axis + "-"
