"""``read_file``: one file from the scanner's export folder to a Volume, a slice, or volumes.

Dispatch by content, never by name: DICOM (Siemens mosaic, enhanced multi-frame, or one slice
of a classic series), NIfTI (3-D: one volume; 4-D: several). Errors say what and where:

* :class:`IncompleteFile`: still being written (truncated, pixel bytes missing): retry shortly;
* :class:`ForeignFile`: not an image series we read (text, JPEG, DICOMDIR, report...): skip;
* :class:`CorruptFile`: complete but unreadable: report and skip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rtcontrol.scanner.errors import CorruptFile, ForeignFile, IncompleteFile, IngestError
from rtcontrol.scanner.volume import SliceImage, Volume

__all__ = ["SliceImage", "read_file", "IncompleteFile", "ForeignFile", "CorruptFile"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


#: Files above this size are sized up from their header before being read whole (bytes).
LARGE_FILE = 256 << 20


def read_file(path: Path | str, gzipped: bool = False) -> Volume | SliceImage | list[Volume]:
    """Parse one file; raise IncompleteFile / ForeignFile / CorruptFile with a reason.

    ``gzipped``: also read gzipped DICOM (``*.dcm.gz``; convert and replay do, the live watcher does
    not). A very large file is read whole only when its header says it holds that much image."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > LARGE_FILE:
            _check_large(path, size)
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise IncompleteFile(path, "file vanished before it could be read") from exc
    except IsADirectoryError as exc:
        raise ForeignFile(path, "a directory, not a file") from exc
    except OSError as exc:
        raise IncompleteFile(path, f"cannot read yet ({exc.strerror or exc})") from exc
    if gzipped and raw[:2] == b"\x1f\x8b" and not path.name.lower().endswith(NIFTI_SUFFIXES):
        from rtcontrol.scanner.nifti_io import MAX_GUNZIP, gunzip_bounded, looks_like_nifti

        if not looks_like_nifti(raw):
            raw = gunzip_bounded(path, raw, MAX_GUNZIP)
    return read_bytes(path, raw)


def _check_large(path: Path, size: int) -> None:
    """Refuse a huge file whose header does not account for its size, reading only its start."""
    from rtcontrol.scanner import dicomfile

    with open(path, "rb") as f:
        head = f.read(4 << 20)
    if dicomfile.looks_like_dicom(head):
        need = dicomfile.declared_size(head)
        if need is None:
            raise ForeignFile(path, f"{size / 2**30:.1f} GiB file whose first 4 MiB hold no DICOM image header; "
                                    "skipped unread")
        if size > need + (need >> 3) + (16 << 20):
            raise CorruptFile(path, f"{size / 2**30:.1f} GiB file whose header describes an image of "
                                    f"{need / 2**20:.1f} MiB; skipped unread")
    elif head[:2] == b"\x1f\x8b" or head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return  # NIfTI: decompression is bounded by its own header
    else:
        raise ForeignFile(path, f"{size / 2**30:.1f} GiB file that is neither DICOM nor NIfTI; skipped unread")


def read_bytes(path: Path, raw: bytes) -> Volume | SliceImage | list[Volume]:
    """As :func:`read_file` for bytes already read from ``path``."""
    from rtcontrol.scanner import dicomfile, nifti_io

    if not raw:
        raise ForeignFile(path, "empty file (0 bytes)")
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES) or nifti_io.looks_like_nifti(raw):
        return nifti_io.read_nifti_bytes(path, raw)
    if not dicomfile.looks_like_dicom(raw):
        if len(raw) < 132 and not _texty(raw):
            raise IncompleteFile(path, f"only {len(raw)} bytes: too short to tell what it is yet")
        raise ForeignFile(path, f"neither DICOM nor NIfTI ({_sniff(raw)})")
    df = dicomfile.open_dicom(path, raw)
    try:
        return _read_dicom(df)
    except IngestError:
        raise
    except Exception as exc:  # a header that parses but makes no sense
        raise CorruptFile(path, f"{type(exc).__name__}: {exc}") from exc


def _read_dicom(df: Any) -> Volume | SliceImage | list[Volume]:
    from rtcontrol.scanner import dicomfile, enhanced, mosaic, slices

    if df.sop_class in (dicomfile.ENHANCED_MR_IMAGE, "1.2.840.10008.5.1.4.1.1.4.4") or df.groups[1] > df.groups[0]:
        return enhanced.read_enhanced(df)
    if mosaic.is_mosaic(df.ds):
        return mosaic.read_mosaic(df)
    return slices.read_slice(df)


def _texty(raw: bytes) -> bool:
    sample = raw[:512]
    return bool(sample) and sum(32 <= b < 127 or b in (9, 10, 13) for b in sample) > 0.9 * len(sample)


def _sniff(raw: bytes) -> str:
    if raw[:3] == b"\xff\xd8\xff":
        return "looks like a JPEG image"
    if raw[:8] == b"\x89PNG\r\n\x1a\n":
        return "looks like a PNG image"
    if raw[:2] == b"\x1f\x8b":
        return ("gzip data that is not a NIfTI file; gzipped DICOM is read by convert and replay, "
                "not in the live watch folder")
    if raw[:4] == b"%PDF":
        return "looks like a PDF"
    if _texty(raw):
        return "looks like text"
    return f"unrecognised binary, starts {raw[:8].hex()}"
