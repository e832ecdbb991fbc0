"""The allowlisted acquisition facts of a DICOM header, in BIDS units (seconds, degrees).

Only :data:`rtcontrol.scanner.volume.HEADER_ALLOWLIST` keys are produced: nothing that names or
identifies the patient. Times are BIDS-style seconds so the sidecar writer can copy them.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset

from rtcontrol.scanner.geometry import ms_to_s

MANUFACTURERS = (("siemens", "Siemens"), ("ge ", "GE"), ("ge_", "GE"), ("philips", "Philips"), ("canon", "Canon"),
                 ("toshiba", "Canon"))


def manufacturer(ds: Dataset) -> str:
    """Short vendor name as dcm2niix writes it ('Siemens', 'GE', 'Philips'...)."""
    raw = str(ds.get("Manufacturer", "") or "")
    low = raw.lower() + " "
    for key, name in MANUFACTURERS:
        if low.startswith(key) or key.strip() == low.strip():
            return name
    return raw.strip()


def _num(value: Any) -> float | int | None:
    if value is None or value == "":
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(f) if f.is_integer() else round(f, 6)


def header_facts(ds: Dataset, source_format: str, **overrides: Any) -> dict[str, Any]:
    """Allowlisted facts from a classic (non-enhanced) header; ``overrides`` win."""
    image_type = ds.get("ImageType")
    facts: dict[str, Any] = {
        "SourceFormat": source_format,
        "Manufacturer": manufacturer(ds),
        "ManufacturersModelName": str(ds.get("ManufacturerModelName", "") or "") or None,
        "MagneticFieldStrength": _num(ds.get("MagneticFieldStrength")),
        "SeriesNumber": _num(ds.get("SeriesNumber")),
        "SeriesDescription": str(ds.get("SeriesDescription", "") or "") or None,
        "ProtocolName": str(ds.get("ProtocolName", "") or "") or None,
        "SequenceName": str(ds.get("SequenceName", "") or ds.get("PulseSequenceName", "") or "") or None,
        "ScanningSequence": _joined(ds.get("ScanningSequence")),
        "SequenceVariant": _joined(ds.get("SequenceVariant")),
        "ImageType": (
            [str(x) for x in image_type] if image_type is not None and not isinstance(image_type, str) else image_type
        ),
        "AcquisitionNumber": _num(ds.get("AcquisitionNumber")),
        "AcquisitionTime": str(ds.get("AcquisitionTime", "") or "") or None,
        "RepetitionTime": ms_to_s(ds.get("RepetitionTime")),
        "EchoTime": ms_to_s(ds.get("EchoTime")),
        "FlipAngle": _num(ds.get("FlipAngle")),
        "SliceThickness": _num(ds.get("SliceThickness")),
        "SpacingBetweenSlices": _num(ds.get("SpacingBetweenSlices")),
    }
    facts.update(overrides)
    return {k: v for k, v in facts.items() if v is not None}


def _joined(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    return "_".join(str(v) for v in value)
