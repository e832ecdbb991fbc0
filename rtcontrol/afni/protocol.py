"""AFNI realtime (plug_realtime) image-source protocol, without I/O.

Pure functions from a :class:`~rtcontrol.scanner.volume.Volume` to the bytes AFNI reads:
the control string, the metadata block and the images; see ``specs/afni-realtime.md``
(sections 4-9 and the checklist in 15). The asyncio layers in :mod:`rtcontrol.afni.channel`
and :mod:`rtcontrol.afni.sender` only move these bytes.

Geometry: our affines map voxels to RAS+ mm; AFNI thinks in DICOM order (x to the Left,
y to the Posterior, z to the Superior, "RAI"). ``XYZAXES`` names the cardinal direction of
each voxel axis, ``XYZFIRST`` puts the centre of voxel (0, 0, 0) at the same place as ours
(written with the L/P/S letter, so the number is simply the DICOM coordinate), and for an
oblique acquisition ``OBLIQUE_XFORM`` carries the exact voxel -> DICOM matrix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from nibabel.orientations import io_orientation

from rtcontrol.errors import RtcontrolError
from rtcontrol.scanner.volume import Volume

DEFAULT_CONTROL_PORT = 7961  # AFNI_CONTROL_PORT since ~2011 (spec section 2)
DEFAULT_DATA_PORT = 7960  # AFNI_TCP_PORT, the conventional data port
LEGACY_CONTROL_PORT = 7954  # what README.realtime still says; only for very old AFNI
END_OF_RUN = b"Et Earello Endorenna utulien!!"  # first 30 bytes of the end-of-run image (section 9)
MAX_HEADER_BYTES = 32 * 1024 - 1  # AFNI reads the metadata block into a 32 KB buffer
MAX_LINE_CHARS = 1023  # AFNI's line buffer is 1024 bytes
OBLIQUE_TOLERANCE_DEG = 0.01  # an axis further than this from its cardinal direction is oblique

#: RAS axis and direction (+1 towards R/A/S) -> AFNI orientation code of a voxel axis.
_AXIS_CODE = {
    (0, 1): "L-R",
    (0, -1): "R-L",
    (1, 1): "P-A",
    (1, -1): "A-P",
    (2, 1): "I-S",
    (2, -1): "S-I",
}
_LPS_LETTER = "LPS"  # XYZFIRST letter for a value that is the DICOM (LPS) coordinate
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_BYTES_PER_VOXEL = {"short": 2, "float": 4}


class HeaderError(RtcontrolError, ValueError):
    """A volume cannot be described to AFNI (says what is missing or wrong)."""


def f32(value: float) -> str:
    """Shortest decimal text that reads back (AFNI parses with ``%f`` into float) to the same float32."""
    text = str(np.float32(value))  # numpy prints the shortest round-tripping repr
    if text.endswith(".0"):
        text = text[:-2]
    return "0" if text == "-0" else text


# ----------------------------------------------------------------------------- control channel


def tcp_spec(host: str, data_port: int) -> str:
    """Data-channel spec for TCP: AFNI ignores ``host`` and listens on ``data_port``."""
    if not 0 < int(data_port) < 65536:
        raise ValueError(f"AFNI data port must be 1..65535, got {data_port}")
    return f"tcp:{host}:{int(data_port)}"


def shm_spec(name: str, size: int) -> str:
    """Data-channel spec for SysV shared memory (same host only), size in bytes."""
    if not re.fullmatch(r"[A-Za-z0-9_.+-]{1,100}", name or "") or "+" in name:
        raise ValueError(f"bad shm name {name!r}: use 1-100 letters, digits, '_', '.', '-'")
    if int(size) <= 0:
        raise ValueError(f"shm size must be > 0, got {size}")
    return f"shm:{name}:{int(size)}"


def control_message(data_spec: str) -> bytes:
    """The whole control-channel payload: the data spec and one NUL, never an info-command line."""
    if not 6 <= len(data_spec) <= 127 or "\n" in data_spec or "\0" in data_spec:
        raise ValueError(f"bad AFNI data spec {data_spec!r} (6..127 chars, one line)")
    return data_spec.encode("ascii") + b"\0"


def parse_size(text: str) -> int:
    """``1M`` / ``50K`` / ``65536`` -> bytes, as IOCHAN reads an shm size."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)\s*", text)
    if not m:
        raise ValueError(f"bad size {text!r}: a number optionally followed by K or M")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class AfniGeometry:
    """How AFNI is told where the voxels are."""

    matrix: tuple[int, int, int]
    fov: tuple[float, float, float]  # |voxel size| * n per axis, mm
    axes: tuple[str, str, str]  # e.g. ("L-R", "P-A", "I-S")
    first: tuple[str, str, str]  # e.g. ("10.5L", "12P", "-6S")
    oblique_xform: tuple[float, ...] | None  # 16 values, row-major voxel -> DICOM (LPS) mm


def is_oblique(affine: np.ndarray, tolerance_deg: float = OBLIQUE_TOLERANCE_DEG) -> bool:
    """True if any voxel axis is more than ``tolerance_deg`` away from a cardinal direction."""
    cols = np.asarray(affine, dtype=np.float64)[:3, :3]
    norms = np.linalg.norm(cols, axis=0)
    if np.any(norms <= 0):
        raise HeaderError(f"affine has a zero-length voxel axis: {affine.tolist()}")
    cosines = np.abs(cols / norms).max(axis=0)
    return bool(np.any(np.degrees(np.arccos(np.clip(cosines, 0.0, 1.0))) > tolerance_deg))


def geometry(affine: np.ndarray, shape: tuple[int, int, int]) -> AfniGeometry:
    """AFNI grid for a voxel -> RAS affine: nearest cardinal axes, voxel 0 where ours is."""
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise HeaderError("affine has NaN/inf entries")
    nx, ny, nz = (int(n) for n in shape)
    if nx < 2 or ny < 2 or nz < 1:
        raise HeaderError(f"AFNI needs at least 2x2x1 voxels, got {shape}")
    ornt = io_orientation(affine)  # per voxel axis: (RAS axis, +1 towards R/A/S / -1)
    if np.isnan(ornt).any():
        raise HeaderError(f"affine has a degenerate voxel axis: {affine.tolist()}")
    lps = _RAS_TO_LPS @ affine
    sizes = np.linalg.norm(affine[:3, :3], axis=0)
    axes, first = [], []
    for c in range(3):
        w, flip = int(ornt[c, 0]), int(ornt[c, 1])
        axes.append(_AXIS_CODE[(w, flip)])
        first.append(f"{f32(lps[w, 3])}{_LPS_LETTER[w]}")
    oblique = tuple(float(v) for v in lps.reshape(-1)) if is_oblique(affine) else None
    return AfniGeometry(
        matrix=(nx, ny, nz),
        fov=(float(sizes[0] * nx), float(sizes[1] * ny), float(sizes[2] * nz)),
        axes=(axes[0], axes[1], axes[2]),
        first=(first[0], first[1], first[2]),
        oblique_xform=oblique,
    )


# ----------------------------------------------------------------------------- datum


def is_scaled(volume: Volume) -> bool:
    return volume.scl_slope not in (0.0, 1.0) or volume.scl_inter != 0.0


def choose_datum(volume: Volume) -> str:
    """``short`` when the stored integers fit int16 unscaled, else ``float`` (AFNI has no scaling)."""
    data = volume.data
    if data.dtype.kind == "c":
        raise HeaderError(f"complex data ({data.dtype}) is not sent to AFNI")
    if data.dtype.kind not in "biuf":
        raise HeaderError(f"cannot send {data.dtype} voxels to AFNI")
    if is_scaled(volume) or data.dtype.kind == "f":
        return "float"
    if data.dtype.itemsize == 1 or data.dtype == np.int16 or data.dtype == np.bool_:
        return "short"
    if data.size == 0:
        return "short"
    lo, hi = int(data.min()), int(data.max())
    return "short" if -32768 <= lo and hi <= 32767 else "float"


# ----------------------------------------------------------------------------- metadata block


@dataclass(frozen=True)
class HeaderOptions:
    """Run settings that end up in the metadata block."""

    prefix: str | None = None  # AFNI dataset prefix (PREFIX); None -> AFNI_REALTIME_Root
    note: str | None = None  # NOTE attached to the dataset
    tr: float | None = None  # seconds; overrides the volume's TR when given
    slice_timing: bool = True  # send 3D+timing + TPATTERN explicit when the volume knows it


@dataclass(frozen=True)
class RunHeader:
    """The metadata block of one AFNI run and what the images of that run look like."""

    lines: tuple[str, ...]
    datum: str
    shape: tuple[int, int, int]
    scaled: bool
    warnings: tuple[str, ...] = field(default=())

    @property
    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)

    @property
    def block(self) -> bytes:
        """Every line ends with ``\\n``; exactly one NUL ends the block (send in one write)."""
        return self.text.encode("ascii") + b"\0"

    @property
    def imsize(self) -> int:
        nx, ny, nz = self.shape
        return nx * ny * nz * _BYTES_PER_VOXEL[self.datum]


def sanitize_prefix(prefix: str) -> str:
    """A 'pure' file name of at most 100 characters, as plug_realtime insists."""
    clean = re.sub(r"[^A-Za-z0-9._+-]", "_", prefix.strip()).lstrip(".-") or "rt"
    return clean[:100]


def sanitize_note(note: str) -> str:
    """One ASCII line; newlines become form feeds (AFNI turns \\f back into line breaks)."""
    text = note.replace("\r\n", "\n").replace("\n", "\f").replace("\0", " ")
    text = text.encode("ascii", "replace").decode("ascii")
    return text[: MAX_LINE_CHARS - len("NOTE ")]


def _tpattern(times: tuple[float, ...], nz: int) -> str | None:
    if len(times) != nz or not all(np.isfinite(times)):
        return None
    for fmt in (f32, lambda t: f"{t:.4f}".rstrip("0").rstrip(".") or "0"):
        line = "TPATTERN explicit " + " ".join(fmt(t) for t in times)
        if len(line) <= MAX_LINE_CHARS:
            return line
    return None


def build_header(volume: Volume, options: HeaderOptions = HeaderOptions(), datum: str | None = None) -> RunHeader:
    """The metadata block for a run whose first volume is ``volume`` (spec section 5, checklist 4).

    Line order follows rtfeedme (so the common lines are byte-identical to its output); the
    lines rtfeedme does not send (BYTEORDER, TPATTERN, OBLIQUE_XFORM, PREFIX, NOTE) follow.
    """
    tr = options.tr if options.tr is not None else volume.tr
    if tr is None or not np.isfinite(tr) or tr <= 0:
        raise HeaderError(f"TR unknown for run {volume.run!r} volume {volume.index}: give the TR (seconds)")
    datum = datum or choose_datum(volume)
    if datum not in _BYTES_PER_VOXEL:
        raise HeaderError(f"datum {datum!r} not supported (short or float)")
    geo = geometry(volume.affine, volume.shape)
    warnings: list[str] = []
    tpattern = None
    if options.slice_timing and volume.slice_timing is not None and geo.matrix[2] > 1:
        tpattern = _tpattern(volume.slice_timing, geo.matrix[2])
        if tpattern is None:
            warnings.append(
                f"slice timing ({len(volume.slice_timing)} values for {geo.matrix[2]} slices) not sent to AFNI"
            )
    lines = [
        f"ACQUISITION_TYPE {'3D+timing' if tpattern else '3D+t'}",
        f"TR {tr:f}",
        "XYFOV {:f} {:f} {:f}".format(*geo.fov),
        "XYMATRIX {} {} {}".format(*geo.matrix),
        f"DATUM {datum}",
        "XYZAXES {} {} {}".format(*geo.axes),
        "XYZFIRST {} {} {}".format(*geo.first),
        "BYTEORDER LSB_FIRST",
    ]
    if tpattern:
        lines.append(tpattern)
    if geo.oblique_xform is not None:
        lines.append("OBLIQUE_XFORM " + " ".join(f32(v) for v in geo.oblique_xform))
    if options.prefix:
        lines.append(f"PREFIX {sanitize_prefix(options.prefix)}")
    if options.note:
        lines.append(f"NOTE {sanitize_note(options.note)}")
    header = RunHeader(tuple(lines), datum, geo.matrix, is_scaled(volume), tuple(warnings))
    if len(header.block) > MAX_HEADER_BYTES or any(len(line) > MAX_LINE_CHARS for line in lines):
        raise HeaderError("AFNI metadata block too long (max 32 KB, lines of at most 1023 chars)")
    return header


# ----------------------------------------------------------------------------- images


@dataclass(frozen=True)
class EncodedImage:
    payload: bytes
    clipped: int = 0  # voxels outside int16 that had to be clipped for DATUM short


def encode_image(volume: Volume, header: RunHeader) -> EncodedImage:
    """One whole image in AFNI's order: x (i) fastest, then y, then z; little-endian."""
    if volume.shape != header.shape:
        raise HeaderError(f"volume {volume.index} has shape {volume.shape}, the AFNI run expects {header.shape}")
    clipped = 0
    if header.datum == "float":
        data = volume.scaled(np.float32) if header.scaled else volume.data
        payload = np.asarray(data, dtype="<f4").tobytes(order="F")
    else:
        data = volume.data
        if data.dtype.itemsize > 2 or data.dtype == np.uint16:
            out_of_range = (data < -32768) | (data > 32767)
            clipped = int(np.count_nonzero(out_of_range))
            if clipped:
                data = np.clip(data, -32768, 32767)
        payload = np.asarray(data, dtype="<i2").tobytes(order="F")
    assert len(payload) == header.imsize
    return EncodedImage(payload, clipped)


def end_of_run_image(imsize: int) -> bytes:
    """A full-size image starting with AFNI's end-of-run marker, zero-filled."""
    if imsize < len(END_OF_RUN):
        raise ValueError(f"image size {imsize} is smaller than the end-of-run marker")
    return END_OF_RUN + bytes(imsize - len(END_OF_RUN))
