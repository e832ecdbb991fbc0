"""The scanner's data model: the ``Volume`` (one acquired brain volume with geometry, timing and its
timeline) and the ``SliceImage`` (one slice of a one-file-per-slice series, before assembly).

Conventions every part of rtcontrol relies on:

* ``data`` is indexed ``[i, j, k]`` (x fastest in memory order is *not* implied; use
  ``np.asfortranarray``/``tobytes(order="F")`` where a consumer needs it).
* ``affine`` maps ``(i, j, k, 1)`` to RAS+ millimetres, as in nibabel and NIfTI.
* ``data`` holds the stored values; real values are ``data * scl_slope + scl_inter``
  (NIfTI semantics, so a volume round-trips to the same file dcm2niix writes).
* ``slice_timing[k]`` is the acquisition time of slice ``k`` in seconds from volume start.
* ``timeline`` stamps are ``time.monotonic()`` seconds of the host that stamped them;
  the link translates a remote host's stamps into the local clock.
* ``header`` holds only keys from :data:`HEADER_ALLOWLIST`: patient-identifying DICOM
  fields never leave the console, so a worker in the cloud is safe under a hospital's data
  rules (docs/architecture.md, decision 9).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Pipeline stages in order; each volume's timeline is stamped at these points.
STAGES: tuple[str, ...] = (
    "file_seen",  # the watcher first saw the file
    "file_complete",  # the file parsed with all pixel bytes
    "parsed",  # the Volume exists
    "sent",  # the console put it on the worker link
    "worker_received",  # the worker took it off the wire
    "result_ready",  # the project returned feedback
    "feedback_received",  # the console received the feedback
    "subject_delivered",  # the subject agent received it
    "consumer_taken",  # a stimulus program / display took it
    "displayed",  # shown on screen (built-in display or GUI)
)

#: Allowlisted acquisition facts that are also BIDS sidecar fields of the same name, in sidecar order.
BIDS_HEADER_FIELDS: tuple[str, ...] = (
    "Manufacturer",
    "ManufacturersModelName",
    "MagneticFieldStrength",
    "SeriesNumber",
    "SeriesDescription",
    "ProtocolName",
    "SequenceName",
    "ScanningSequence",
    "SequenceVariant",
    "ImageType",
    "AcquisitionTime",  # time of day only, no date
    "RepetitionTime",
    "EchoTime",
    "FlipAngle",
    "SliceThickness",
    "SpacingBetweenSlices",
    "PhaseEncodingDirection",
    "MultibandAccelerationFactor",
)

#: Acquisition facts allowed to travel beyond the console (no names, IDs, dates of birth...).
HEADER_ALLOWLIST: frozenset[str] = frozenset(
    BIDS_HEADER_FIELDS
    + (
        "AcquisitionNumber",
        "NumberOfVolumes",
        "SourceFormat",  # "siemens_mosaic", "siemens_enhanced", "slices", "nifti", "synthetic"
    )
)


def clean_header(header: dict[str, Any]) -> dict[str, Any]:
    """Keep only allowlisted, JSON-safe acquisition facts."""
    out: dict[str, Any] = {}
    for key, value in header.items():
        if key not in HEADER_ALLOWLIST:
            continue
        if isinstance(value, (np.generic,)):
            value = value.item()
        if isinstance(value, (list, tuple)):
            value = [v.item() if isinstance(v, np.generic) else v for v in value]
        if value is None or isinstance(value, (str, int, float, bool, list)):
            out[key] = value
        else:
            out[key] = str(value)
    return out


@dataclass
class Timeline:
    """Monotonic timestamps (seconds) per pipeline stage, see :data:`STAGES`."""

    stamps: dict[str, float] = field(default_factory=dict)

    def stamp(self, stage: str, when: float | None = None) -> float:
        """Record ``stage`` now (or at ``when``); an earlier stamp of the same stage is kept."""
        if stage not in STAGES:
            raise ValueError(f"unknown timeline stage {stage!r}; known: {', '.join(STAGES)}")
        t = time.monotonic() if when is None else float(when)
        self.stamps.setdefault(stage, t)
        return self.stamps[stage]

    def get(self, stage: str) -> float | None:
        return self.stamps.get(stage)

    def between(self, first: str, last: str) -> float | None:
        """Seconds from ``first`` to ``last``, or None if either is missing."""
        a, b = self.stamps.get(first), self.stamps.get(last)
        return None if a is None or b is None else b - a

    def shifted(self, offset: float) -> Timeline:
        """A copy with every stamp moved by ``offset`` seconds (clock translation)."""
        return Timeline({k: v + offset for k, v in self.stamps.items()})

    def to_dict(self) -> dict[str, float]:
        return dict(self.stamps)

    @classmethod
    def from_dict(cls, d: dict[str, float] | None) -> Timeline:
        return cls({k: float(v) for k, v in (d or {}).items() if k in STAGES})


@dataclass
class Volume:
    """One volume of a run, with world geometry and timing."""

    data: np.ndarray
    affine: np.ndarray
    run: str = "run"
    index: int = 0
    tr: float | None = None
    slice_timing: tuple[float, ...] | None = None
    scl_slope: float = 1.0
    scl_inter: float = 0.0
    acquisition_time: float | None = None  # seconds since midnight, scanner clock
    header: dict[str, Any] = field(default_factory=dict)
    timeline: Timeline = field(default_factory=Timeline)
    series_uid: str = ""  # identifies the series on the console; never sent off it
    source: str = ""  # the file it was read from (the first slice's, when assembled); never sent off the console

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")
        if self.data.ndim != 3:
            raise ValueError(f"volume data must be 3-D (i, j, k), got shape {self.data.shape}")
        if self.slice_timing is not None:
            self.slice_timing = tuple(float(t) for t in self.slice_timing)
        self.header = clean_header(self.header)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)

    @property
    def voxel_size(self) -> np.ndarray:
        """Voxel edge lengths in mm, from the affine's columns."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    def scaled(self, dtype: type = np.float32) -> np.ndarray:
        """Real values (``data * scl_slope + scl_inter``) as ``dtype``."""
        out: np.ndarray = self.data.astype(dtype, copy=True)
        if self.scl_slope not in (0.0, 1.0) or self.scl_inter != 0.0:
            out *= dtype(self.scl_slope)
            out += dtype(self.scl_inter)
        return out

    def world_coords(self, ijk: np.ndarray) -> np.ndarray:
        """Voxel indices (N, 3) to RAS+ mm (N, 3)."""
        ijk = np.atleast_2d(np.asarray(ijk, dtype=np.float64))
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]


@dataclass
class SliceImage:
    """One 2-D slice of a one-file-per-slice series, with what assembly needs.

    ``pixels`` is indexed [row, column] as stored; ``slice_position`` is the projection of
    ImagePositionPatient on the slice normal (mm), which orders slices in space;
    ``temporal_index`` (0-based) orders volumes in time (None when the file does not say).
    """

    series_uid: str
    pixels: np.ndarray
    temporal_index: int | None
    slice_position: float
    acquisition_time: float | None
    path: Path
    position: np.ndarray = field(default_factory=lambda: np.zeros(3))  # ImagePositionPatient (LPS mm)
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # ImageOrientationPatient
    pixel_spacing: tuple[float, float] = (1.0, 1.0)  # (between rows, between columns) mm
    slices_per_volume: int | None = None  # from the header when it says
    slice_time: float | None = None  # seconds from volume start, when known per slice
    scl_slope: float = 1.0
    scl_inter: float = 0.0
    instance_number: int | None = None
    header: dict[str, Any] = field(default_factory=dict)  # allowlisted facts
    tr: float | None = None

    @property
    def geometry_key(self) -> tuple:
        """Slices of one volume share orientation, matrix and spacing."""
        return (
            tuple(round(x, 5) for x in self.orientation),
            self.pixels.shape,
            tuple(round(x, 5) for x in self.pixel_spacing),
        )
