"""Open one DICOM file fast and say plainly when it is incomplete, foreign or corrupt.

The file is read in one go; pydicom parses the header only (``stop_before_pixels``) and the
pixel bytes are located by hand, so a half-written file is recognised before any decoding:
the Pixel Data element must hold ``rows * cols * frames * bits / 8`` bytes. Little-endian
uncompressed data (what scanners write in real time) is then viewed with ``np.frombuffer``;
anything else falls back to pydicom's own pixel handling.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.filereader import read_partial

from rtcontrol.scanner.errors import CorruptFile, ForeignFile, IncompleteFile

PIXEL_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4.1"
#: Image storage classes we read; anything else (reports, DICOMDIR, spectroscopy...) is foreign.
IMAGE_CLASSES = {
    MR_IMAGE,
    ENHANCED_MR_IMAGE,
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture (some converters write EPI as SC)
}
_LITTLE_UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}


@dataclass
class DicomFile:
    """A parsed header plus where its pixel bytes are."""

    path: Path
    ds: Dataset
    raw: bytes
    pixel_offset: int  # first pixel byte in ``raw``; -1 when pydicom must decode
    pixel_length: int
    groups: tuple[int, int] = (0, 0)  # byte range of the functional groups (5200,xxxx), left unparsed

    @property
    def explicit_little(self) -> bool:
        meta = getattr(self.ds, "file_meta", None) or Dataset()
        return str(meta.get("TransferSyntaxUID", "")) == "1.2.840.10008.1.2.1"

    @property
    def sop_class(self) -> str:
        meta = getattr(self.ds, "file_meta", None) or Dataset()
        return str(self.ds.get("SOPClassUID", "") or meta.get("MediaStorageSOPClassUID", ""))

    def pixels(self) -> np.ndarray:
        """Stored pixel values shaped (frames, rows, cols) (frames = 1 for a single image)."""
        ds = self.ds
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if self.pixel_offset >= 0:
            dtype = _dtype(ds, self.path)
            arr = np.frombuffer(self.raw, dtype=dtype, count=rows * cols * frames, offset=self.pixel_offset)
            return arr.reshape(frames, rows, cols)
        try:  # encapsulated / big endian: let pydicom (and its handlers) decode
            full = pydicom.dcmread(BytesIO(self.raw), force=True)
            arr = full.pixel_array
        except Exception as exc:
            raise CorruptFile(self.path, f"cannot decode pixel data ({exc})") from exc
        return np.asarray(arr).reshape(frames, rows, cols)


def _dtype(ds: Dataset, path: Path) -> np.dtype:
    """The stored pixel type; ``path`` names the file in the error (the dataset was read from bytes)."""
    bits = int(ds.get("BitsAllocated", 16))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    if bits not in (8, 16, 32):
        raise CorruptFile(path, f"unsupported BitsAllocated={bits} (8, 16 or 32 are read)")
    return np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")


def looks_like_dicom(head: bytes) -> bool:
    """DICOM Part 10 preamble + 'DICM', or a bare dataset starting in group 0002/0008."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    return len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00") and head[2:4] < b"\x20\x00"


def open_dicom(path: Path | str, raw: bytes | None = None) -> DicomFile:
    """Parse ``path`` (or its bytes ``raw``); raise IncompleteFile/ForeignFile/CorruptFile."""
    path = Path(path)
    if raw is None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError as exc:
            raise IncompleteFile(path, "file vanished before it could be read") from exc
        except OSError as exc:
            raise IncompleteFile(path, f"cannot read yet ({exc.strerror or exc})") from exc
    if not looks_like_dicom(raw):
        if len(raw) < 132 and not raw[:128].strip(b"\x00") and b"DICM".startswith(raw[128:]):  # may still come
            raise IncompleteFile(path, f"only {len(raw)} bytes so far (a DICOM preamble, no 'DICM' marker yet)")
        raise ForeignFile(path, "not a DICOM file (no 'DICM' marker at byte 128)")
    fp = BytesIO(raw)
    try:
        ds = read_partial(fp, _before_groups_or_pixels, force=True)
    except Exception as exc:
        raise _unreadable(path, raw, f"DICOM header unreadable ({type(exc).__name__}: {exc})") from exc
    pos = fp.tell()
    groups = (0, 0)
    if raw[pos : pos + 2] == b"\x00\x52":  # enhanced: functional groups first, then the pixels
        pixel_at = raw.rfind(PIXEL_TAG, pos)
        if pixel_at < 0:
            raise IncompleteFile(path, f"no pixel data yet ({len(raw)} bytes: functional groups only)")
        groups, pos = (pos, pixel_at), pixel_at
    meta = getattr(ds, "file_meta", None) or Dataset()
    sop = str(ds.get("SOPClassUID", "") or meta.get("MediaStorageSOPClassUID", ""))
    if "Rows" not in ds or "Columns" not in ds:
        cut_short = pos >= len(raw) and any(c.startswith(sop) for c in IMAGE_CLASSES)  # the bytes end in the UID
        if sop and sop not in IMAGE_CLASSES and not cut_short:
            raise ForeignFile(path, f"DICOM but not an image we read (SOP class {sop})")
        raise _unreadable(path, raw, "DICOM header ends before the image description (Rows/Columns)")
    if sop and sop not in IMAGE_CLASSES:
        raise ForeignFile(path,
                          f"DICOM image of a kind we do not read (SOP class {sop}, modality {ds.get('Modality', '?')})")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise ForeignFile(path, "colour image (SamplesPerPixel > 1): not a scanner series")
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    expected = rows * cols * frames * bits // 8
    if raw[pos : pos + 4] != PIXEL_TAG:
        raise IncompleteFile(path, f"no pixel data yet ({len(raw)} bytes: header only)")
    tsyntax = str(meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    implicit = tsyntax == "1.2.840.10008.1.2"
    if implicit:
        if len(raw) < pos + 8:
            raise IncompleteFile(path, "pixel data element header cut short")
        (length,) = struct.unpack_from("<I", raw, pos + 4)
        start = pos + 8
    else:
        if len(raw) < pos + 12:
            raise IncompleteFile(path, "pixel data element header cut short")
        vr = raw[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"UN", b"OD", b"OL"):
            (length,) = struct.unpack_from("<I", raw, pos + 8)
            start = pos + 12
        else:  # short-form VR (non-standard but seen)
            (length,) = struct.unpack_from("<H", raw, pos + 6)
            start = pos + 8
    if length == 0xFFFFFFFF:  # encapsulated (compressed): completeness = sequence delimiter present
        if raw.rfind(b"\xfe\xff\xdd\xe0") < start:
            raise IncompleteFile(path, "compressed pixel data not finished (no sequence delimiter yet)")
        return DicomFile(path, ds, raw, -1, len(raw) - start, groups)
    have = len(raw) - start
    if have < min(length, expected):
        raise IncompleteFile(path, f"pixel data has {have} of {min(length, expected)} bytes")
    if length < expected:
        raise CorruptFile(path, f"pixel data holds {length} bytes, {rows}x{cols}x{frames}x{bits}bit needs {expected}")
    if tsyntax not in _LITTLE_UNCOMPRESSED:
        return DicomFile(path, ds, raw, -1, length, groups)
    _dtype(ds, path)  # an unsupported pixel layout is reported now, with the file's name
    return DicomFile(path, ds, raw, start, length, groups)


def declared_size(head: bytes) -> int | None:
    """Bytes a DICOM file should hold (header + pixel data) from its first bytes; None if they do not tell."""
    fp = BytesIO(head)
    try:
        ds = read_partial(fp, _before_groups_or_pixels, force=True)
    except Exception:
        return None
    if "Rows" not in ds or "Columns" not in ds:
        return None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    pixel_at = head.rfind(PIXEL_TAG)
    start = pixel_at if pixel_at > 0 else fp.tell()
    return start + 12 + int(ds.Rows) * int(ds.Columns) * frames * max(bits, 8) // 8


def _before_groups_or_pixels(tag: int, vr: object, length: int) -> bool:
    """Stop the header parse at the functional groups (5200,xxxx) or the pixel data: the enhanced
    reader scans the groups itself (pydicom would build ~3000 elements a file), mosaics have none."""
    return tag == 0x7FE00010 or (tag >> 16) == 0x5200



def _unreadable(path: Path, raw: bytes, reason: str) -> Exception:
    """A header that fails to parse: incomplete unless the file visibly ends with whole pixel data."""
    at = raw.rfind(PIXEL_TAG)
    if at > 132 and len(raw) >= at + 12:
        (length,) = struct.unpack_from("<I", raw, at + 8)
        if at + 12 + length == len(raw):
            return CorruptFile(path, reason + " although the file is complete")
    return IncompleteFile(path, reason)
