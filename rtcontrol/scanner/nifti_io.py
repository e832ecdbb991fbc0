"""NIfTI in and out via nibabel: files a scanner-side converter drops, and what ``convert`` writes.

Reading keeps the stored values and the file's scl_slope/scl_inter (``Volume.scaled()`` gives
the real values), and the voxel order as stored. A 4-D file yields one Volume per time point.
A 3-D file's volume index comes from a JSON sidecar's AcquisitionNumber or the trailing digits
of its name (``func_0007.nii`` -> 6 for 1-based names, see :func:`_index_from_name`).
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
from nibabel.arrayproxy import ArrayProxy

from rtcontrol.scanner.errors import CorruptFile, ForeignFile, IncompleteFile
from rtcontrol.scanner.volume import Volume

_MAGICS = (b"n+1\x00", b"ni1\x00", b"n+2\x00")
#: Most bytes a gzipped scanner file may expand to (a DICOM says nothing of its size up front).
MAX_GUNZIP = 2 << 30


def looks_like_nifti(raw: bytes) -> bool:
    head = raw[:540]
    if raw[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw[:4096], 540)
        except zlib.error:
            return False
    return head[344:348] in _MAGICS[:2] or head[4:8] in _MAGICS


def read_nifti(path: Path | str) -> Volume | list[Volume]:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise IncompleteFile(path, f"cannot read yet ({exc})") from exc
    return read_nifti_bytes(path, raw)


def read_nifti_bytes(path: Path, raw: bytes) -> Volume | list[Volume]:
    """3-D -> one Volume; 4-D -> a list (one per time point)."""
    data = raw
    if raw[:2] == b"\x1f\x8b":
        data = _gunzip_nifti(path, raw)
    if len(data) < 348:
        raise IncompleteFile(path, f"NIfTI header needs 348 bytes, file has {len(data)}")
    if not looks_like_nifti(data):
        raise ForeignFile(path, "named like NIfTI but has no NIfTI magic ('n+1')")
    kind = nib.Nifti1Image if data[344:348] in _MAGICS[:2] else nib.Nifti2Image
    try:
        offset = int(kind.header_class.from_fileobj(BytesIO(data)).get_data_offset())
        img = kind.from_bytes(data)
    except Exception as exc:
        raise CorruptFile(path, f"NIfTI header unreadable ({exc})") from exc
    hdr = img.header
    shape = img.shape
    need = offset + int(np.prod(shape)) * hdr.get_data_dtype().itemsize
    if len(data) < need:
        raise IncompleteFile(path, f"NIfTI data has {len(data)} of {need} bytes")
    try:
        arr = np.asanyarray(cast(ArrayProxy, img.dataobj).get_unscaled())
    except Exception as exc:
        raise CorruptFile(path, f"NIfTI data unreadable ({exc})") from exc
    slope, inter = getattr(img.dataobj, "slope", None), getattr(img.dataobj, "inter", None)  # header copy is reset
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    affine = img.affine
    side = _sidecar(path)
    zooms = hdr.get_zooms()
    tr = side.get("RepetitionTime")
    if tr is None and len(zooms) > 3 and zooms[3] > 0:
        unit = hdr.get_xyzt_units()[1]
        tr = float(zooms[3]) / (1000.0 if unit == "msec" else 1e6 if unit == "usec" else 1.0)
    timing = side.get("SliceTiming")
    header = {k: v for k, v in side.items() if isinstance(k, str)}
    header["SourceFormat"] = "nifti"
    stem = _stem(path)
    run = re.sub(r"[_-]?\d+$", "", stem) or stem
    uid = f"nifti:{path.parent.resolve()}/{run}"

    def volume(block: np.ndarray, index: int) -> Volume:
        return Volume(
            data=block,
            affine=affine,
            run=run,
            index=index,
            tr=tr,
            slice_timing=timing if timing and len(timing) == block.shape[2] else None,
            scl_slope=slope,
            scl_inter=inter,
            acquisition_time=None,
            header=header,
            series_uid=uid,
        )

    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim == 3:
        return volume(arr, _index(side, stem))
    if arr.ndim == 4:
        return [volume(arr[..., t], t) for t in range(arr.shape[3])]
    raise ForeignFile(path, f"NIfTI with {arr.ndim} dimensions: not an fMRI volume or run")


def gunzip_bounded(path: Path, raw: bytes, limit: int) -> bytes:
    """Decompress a gzip stream, refusing it once it grows past ``limit`` bytes (a file that inflates
    without bound must not take the machine's memory); a stream cut short is incomplete."""
    return _inflate(path, zlib.decompressobj(16 + zlib.MAX_WBITS), raw, limit,
                    f"beyond {limit / 2**20:.1f} MiB, more than its image can hold",
                    f"{len(raw)} bytes so far")


def _gunzip_nifti(path: Path, raw: bytes) -> bytes:
    """A gzipped NIfTI file, decompressed no further than its header says the image holds."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        head = d.decompress(raw, 544)
    except zlib.error as exc:
        raise IncompleteFile(path, f"gzip stream cut short or damaged ({exc})") from exc
    need = _declared_nifti_size(head)
    if need is None:
        if len(head) < 348:
            raise IncompleteFile(path, f"NIfTI header needs 348 bytes, the gzip stream holds {len(head)} so far")
        raise ForeignFile(path, "named like NIfTI but has no NIfTI magic ('n+1')")
    if need > MAX_GUNZIP:
        raise CorruptFile(path, f"NIfTI header declares {need / 2**30:.1f} GiB of image; more than a scan's file "
                                "holds, skipped")
    limit = need - len(head)
    return head + _inflate(path, d, d.unconsumed_tail, limit,
                           f"beyond the {limit / 2**20:.1f} MiB its NIfTI header declares", "no end marker yet")


def _inflate(path: Path, d: Any, data: bytes, limit: int, too_big: str, short: str) -> bytes:
    """Feed ``data`` to the decompressor ``d``, taking at most ``limit`` bytes out: more is refused as corrupt
    ("expands ``too_big``"), a stream without its end marker is incomplete ("cut short (``short``)")."""
    try:
        out = d.decompress(data, limit + 1) if data else b""
    except zlib.error as exc:
        raise IncompleteFile(path, f"gzip stream cut short or damaged ({exc})") from exc
    if len(out) > limit:
        raise CorruptFile(path, f"gzip data expands {too_big}; skipped")
    if not d.eof:
        raise IncompleteFile(path, f"gzip stream cut short ({short})")
    return out


def _declared_nifti_size(head: bytes) -> int | None:
    """vox_offset + voxels * bytes per voxel from a NIfTI-1/2 header; None if it is not one."""
    try:
        if head[344:348] in _MAGICS[:2]:
            for order in "<>":
                (sizeof,) = struct.unpack_from(order + "i", head, 0)
                if sizeof == 348:
                    dims = struct.unpack_from(order + "8h", head, 40)
                    bitpix = struct.unpack_from(order + "h", head, 72)[0]
                    offset = int(struct.unpack_from(order + "f", head, 108)[0])
                    break
            else:
                return None
        elif head[4:8] == _MAGICS[2]:
            for order in "<>":
                (sizeof,) = struct.unpack_from(order + "i", head, 0)
                if sizeof == 540:
                    bitpix = struct.unpack_from(order + "h", head, 14)[0]
                    dims = struct.unpack_from(order + "8q", head, 16)
                    offset = int(struct.unpack_from(order + "q", head, 168)[0])
                    break
            else:
                return None
        else:
            return None
    except struct.error:
        return None
    n = int(np.prod([max(int(x), 1) for x in dims[1 : 1 + max(min(int(dims[0]), 7), 1)]], dtype=np.int64))
    return max(offset, 348) + n * max(int(bitpix), 8) // 8


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _sidecar(path: Path) -> dict[str, Any]:
    side = path.with_name(_stem(path) + ".json")
    if not side.is_file():
        return {}
    try:
        out = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def _index(side: dict[str, Any], stem: str) -> int:
    acq = side.get("AcquisitionNumber")
    if isinstance(acq, (int, float)) and acq >= 1:
        return int(acq) - 1
    return _index_from_name(stem)


def _index_from_name(stem: str) -> int:
    """Trailing digits of the name, taken as 1-based (scanner converters count from 1)."""
    m = re.search(r"(\d+)$", stem)
    return max(int(m.group(1)) - 1, 0) if m else 0


def write_nifti(volumes: Sequence[Volume], path: Path | str) -> Path:
    """Stack a series' volumes into one 3-D/4-D NIfTI (sform = qform = the volumes' affine)."""
    if not volumes:
        raise ValueError("no volumes to write")
    first = volumes[0]
    for v in volumes[1:]:
        if v.shape != first.shape or not np.allclose(v.affine, first.affine, atol=1e-4):
            raise ValueError(f"volume {v.index} differs in shape or geometry from volume {first.index}")
    data = first.data[..., None] if len(volumes) == 1 else np.stack([v.data for v in volumes], axis=-1)
    if len(volumes) == 1:
        data = data[..., 0]
    if data.dtype == np.uint16 and data.size and int(data.max()) <= np.iinfo(np.int16).max:
        data = data.astype(np.int16)  # as dcm2niix: int16 when the values fit
    img = nib.Nifti1Image(np.asfortranarray(data), first.affine)
    hdr = img.header
    hdr.set_xyzt_units("mm", "sec")
    if len(volumes) > 1 and first.tr:
        zooms = list(hdr.get_zooms())
        zooms[3] = float(first.tr)
        hdr.set_zooms(zooms)
    hdr.set_qform(first.affine, code=1)
    hdr.set_sform(first.affine, code=1)
    hdr.set_slope_inter(first.scl_slope, first.scl_inter)
    hdr.set_dim_info(slice=2)
    path = Path(path)
    nib.save(img, path)
    return path

