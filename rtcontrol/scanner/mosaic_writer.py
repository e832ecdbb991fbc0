"""Write one volume as a Siemens mosaic DICOM file, the way a Siemens scanner exports it in real time.

Used by the simulator (``synth``) and the ingest benchmark. What a reader needs from a real mosaic is
reproduced: the tiles in a square grid, ``NumberOfImagesInMosaic``, ``SliceNormalVector`` and
``MosaicRefAcqTimes`` in the CSA image header (and in the ``SIEMENS MR HEADER`` private block), and the
Siemens ``ImagePositionPatient`` convention: the position given is that of the corner of the whole mosaic
as if it were one big slice, not of the first tile (nibabel's ``dicomwrappers`` documents the correction).

Geometry: ``data[i, j, k]`` with ``i`` = DICOM column, ``j`` = DICOM row, ``k`` = slice, and ``affine``
mapping ``(i, j, k)`` to RAS+ mm. The slice axis must follow ``cross(row, column)`` direction cosines
(``det(affine[:3, :3]) > 0``), as slices are stored in a mosaic acquired foot-to-head.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class MosaicSeries:
    """Series-level facts shared by every volume file of one run."""

    affine: np.ndarray  # (i, j, k) -> RAS+ mm
    shape: tuple[int, int, int]
    tr: float  # seconds
    slice_times: tuple[float, ...]  # seconds from volume start, per slice k
    series_number: int = 7
    description: str = "rtcontrol_synth_bold"
    echo_time_ms: float = 30.0
    flip_angle: float = 77.0
    start_time_s: float = 10 * 3600.0  # AcquisitionTime of volume 0, seconds since midnight
    series_uid: str = field(default_factory=generate_uid)
    study_uid: str = field(default_factory=generate_uid)
    frame_uid: str = field(default_factory=generate_uid)
    patient_name: str = "SYNTHETIC^PHANTOM"

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        self.shape = tuple(int(n) for n in self.shape)  # type: ignore[assignment]
        if len(self.slice_times) != self.shape[2]:
            raise ValueError(f"{len(self.slice_times)} slice times for {self.shape[2]} slices")
        if np.linalg.det(self.affine[:3, :3]) <= 0:
            raise ValueError("mosaic affine must have a positive determinant (slices along row x column)")

    @property
    def grid(self) -> int:
        """Tiles per side of the square mosaic (Siemens: ceil(sqrt(slices)))."""
        return math.ceil(math.sqrt(self.shape[2]))


def _dicom_geometry(series: MosaicSeries) -> dict[str, Any]:
    lps = LPS_FROM_RAS @ series.affine
    dx, dy, dz = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    row_cos, col_cos, normal = lps[:3, 0] / dx, lps[:3, 1] / dy, lps[:3, 2] / dz
    if not np.allclose(np.cross(row_cos, col_cos), normal, atol=1e-6):
        raise ValueError("mosaic affine must be orthogonal with slices along row x column")
    nx, ny, _ = series.shape
    m_rows, m_cols = ny * series.grid, nx * series.grid
    first_slice = lps[:3, 3]
    # Siemens stores the position of the mosaic's corner: undo nibabel's documented correction.
    mosaic_pos = first_slice - (col_cos * dy * (m_rows - ny) / 2 + row_cos * dx * (m_cols - nx) / 2)
    return {
        "dx": dx, "dy": dy, "dz": dz, "row_cos": row_cos, "col_cos": col_cos, "normal": normal,
        "m_rows": m_rows, "m_cols": m_cols, "mosaic_pos": mosaic_pos,
    }  # fmt: skip


def _csa_item(text: str) -> bytes:
    raw = text.encode("latin-1") + b"\0"
    pad = (-len(raw)) % 4
    return struct.pack("<4i", len(raw), len(raw), 77, len(raw)) + raw + b"\0" * pad


def csa_header(tags: list[tuple[str, str, list[str]]]) -> bytes:
    """A CSA2 ("SV10") header from ``(name, vr, values)``; values are already formatted as text."""
    out = [b"SV10", b"\x04\x03\x02\x01", struct.pack("<2I", len(tags), 77)]
    for name, vr, values in tags:
        # as Siemens writes it: a vector of fixed length has vm = its length and 6 items (the rest
        # empty); a variable list (MosaicRefAcqTimes) has vm = 0 and one item per value
        vm = 0 if len(values) > 6 else len(values)
        n_items = len(values) if vm == 0 else 6
        out.append(struct.pack("<64si4s3i", name.encode(), vm, vr.encode(), 6, n_items, 77))
        out.extend(_csa_item(v) for v in values)
        out.extend(struct.pack("<4i", 0, 0, 77, 0) for _ in range(n_items - len(values)))
    return b"".join(out)


def _fmt(x: float) -> str:
    return f"{x:.8f}"


def _tm(seconds: float) -> str:
    seconds %= 86400.0
    h, rem = divmod(seconds, 3600.0)
    m, s = divmod(rem, 60.0)
    return f"{int(h):02d}{int(m):02d}{s:09.6f}"


def _ds(x: float) -> str:
    """A decimal string within DICOM's 16 characters."""
    s = f"{x:.10g}"
    return s if len(s) <= 16 else f"{x:.6g}"


def mosaic_pixels(data: np.ndarray, grid: int) -> np.ndarray:
    """Tile ``data[i, j, k]`` into a ``(rows, cols)`` mosaic: slice k at tile (k // grid, k % grid)."""
    nx, ny, nz = data.shape
    tiles = np.zeros((grid * grid, ny, nx), dtype=data.dtype)
    tiles[:nz] = np.transpose(data, (2, 1, 0))  # tile[k][row=j, col=i]
    return tiles.reshape(grid, grid, ny, nx).transpose(0, 2, 1, 3).reshape(grid * ny, grid * nx)


class MosaicWriter:
    """Builds the DICOM bytes of each volume of one series; the series-level work is done once."""

    def __init__(self, series: MosaicSeries) -> None:
        self.series = series
        self.geometry = _dicom_geometry(series)
        self._csa_series = csa_header([("MrPhoenixProtocol", "UN", [self._ascconv()])])

    def _ascconv(self) -> str:
        s = self.series
        return (
            "### ASCCONV BEGIN ###\n"
            f"sSliceArray.lSize\t = {s.shape[2]}\n"
            f"sKSpace.lBaseResolution\t = {s.shape[0]}\n"
            f"sKSpace.lPhaseEncodingLines\t = {s.shape[1]}\n"
            f"alTR[0]\t = {int(round(s.tr * 1e6))}\n"
            "### ASCCONV END ###\n"
        )

    def dataset(self, data: np.ndarray, index: int) -> Dataset:
        """The DICOM dataset of volume ``index`` (0-based) holding ``data[i, j, k]`` (uint16 or int16)."""
        s, g = self.series, self.geometry
        if data.shape != s.shape:
            raise ValueError(f"volume shape {data.shape} differs from the series shape {s.shape}")
        if data.dtype not in (np.uint16, np.int16):
            raise ValueError(f"mosaic data must be uint16 or int16, got {data.dtype}")
        nx, ny, nz = s.shape
        signed = data.dtype == np.int16
        sop_uid = generate_uid()
        acq_time = s.start_time_s + index * s.tr
        ref_times_ms = [t * 1000.0 for t in s.slice_times]

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20260101"
        ds.AcquisitionTime = ds.ContentTime = _tm(acq_time)
        ds.Modality = "MR"
        ds.Manufacturer = "SIEMENS"
        ds.ManufacturerModelName = "rtcontrol synth"
        ds.SeriesDescription = ds.ProtocolName = s.description
        ds.PatientName = s.patient_name
        ds.PatientID = "SYNTH"
        ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "EP", "SK", "2D"
        ds.SequenceName = f"*epfid2d1_{nx}"
        ds.SliceThickness = _ds(g["dz"])
        ds.SpacingBetweenSlices = _ds(g["dz"])
        ds.RepetitionTime = _ds(s.tr * 1000.0)
        ds.EchoTime = _ds(s.echo_time_ms)
        ds.MagneticFieldStrength = "3"
        ds.FlipAngle = _ds(s.flip_angle)
        ds.AcquisitionMatrix = [nx, 0, 0, ny]
        ds.InPlanePhaseEncodingDirection = "COL"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = s.study_uid
        ds.SeriesInstanceUID = s.series_uid
        ds.SeriesNumber = s.series_number
        ds.AcquisitionNumber = index + 1
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [_ds(v) for v in g["mosaic_pos"]]
        ds.ImageOrientationPatient = [_ds(v) for v in (*g["row_cos"], *g["col_cos"])]
        ds.FrameOfReferenceUID = s.frame_uid
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(g["m_rows"]), int(g["m_cols"])
        ds.PixelSpacing = [_ds(g["dy"]), _ds(g["dx"])]
        ds.BitsAllocated = 16
        ds.BitsStored = 16 if signed else 12
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 1 if signed else 0

        mr = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
        mr.add_new(0x0A, "US", nz)  # NumberOfImagesInMosaic
        mr.add_new(0x0B, "DS", _ds(s.tr * 1000.0 / nz))  # SliceMeasurementDuration
        mr.add_new(0x28, "FD", 20.0)  # BandwidthPerPixelPhaseEncode
        mr.add_new(0x29, "FD", ref_times_ms)  # MosaicRefAcqTimes
        csa = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
        csa.add_new(0x08, "CS", "IMAGE NUM 4")
        csa.add_new(0x10, "OB", self._csa_image(index, ref_times_ms))
        csa.add_new(0x18, "CS", "MR")
        csa.add_new(0x20, "OB", self._csa_series)

        pixels = mosaic_pixels(data, s.grid)
        ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()
        return ds

    def _csa_image(self, index: int, ref_times_ms: list[float]) -> bytes:
        g = self.geometry
        return csa_header(
            [
                ("NumberOfImagesInMosaic", "US", [str(self.series.shape[2])]),
                ("SliceNormalVector", "FD", [_fmt(v) for v in g["normal"]]),
                ("MosaicRefAcqTimes", "FD", [_fmt(t) for t in ref_times_ms]),
                ("SliceMeasurementDuration", "DS", [_fmt(self.series.tr * 1000.0 / self.series.shape[2])]),
                ("PhaseEncodingDirectionPositive", "IS", ["1"]),
                ("BandwidthPerPixelPhaseEncode", "FD", ["20.00000000"]),
                ("ProtocolSliceNumber", "IS", ["0"]),
                ("TimeAfterStart", "DS", [_fmt(index * self.series.tr)]),
            ]
        )

    def encode(self, data: np.ndarray, index: int) -> bytes:
        """The complete DICOM file (preamble, meta, dataset) as bytes."""
        buf = io.BytesIO()
        self.dataset(data, index).save_as(buf, enforce_file_format=True)
        return buf.getvalue()

    def filename(self, index: int) -> str:
        """Siemens real-time export naming: ``001_<series:06d>_<volume:06d>.dcm`` (volume 1-based)."""
        return f"001_{self.series.series_number:06d}_{index + 1:06d}.dcm"

    def write(self, data: np.ndarray, index: int, out_dir: Path) -> Path:
        path = Path(out_dir) / self.filename(index)
        path.write_bytes(self.encode(data, index))
        return path
