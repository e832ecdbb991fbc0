"""Volumes to feed AFNI from a file or folder: NIfTI through nibabel, DICOM through the scanner readers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
from nibabel.arrayproxy import ArrayProxy

from rtcontrol.scanner.volume import Volume

_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)


def _tr_seconds(header: nib.Nifti1Header) -> float | None:
    zooms = header.get_zooms()
    if len(zooms) < 4 or not zooms[3] or zooms[3] <= 0:
        return None
    unit = header.get_xyzt_units()[1]
    scale = {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)
    return float(zooms[3]) * scale


def _slice_times(header: nib.Nifti1Header) -> tuple[float, ...] | None:
    try:
        if header["slice_code"] == 0 or header["slice_duration"] <= 0 or header.get_dim_info()[2] != 2:
            return None
        times = header.get_slice_times()
    except (nib.spatialimages.HeaderDataError, TypeError, ValueError):
        return None
    if times is None or any(t is None for t in times):
        return None
    return tuple(float(t) for t in times)


def load_nifti(path: Path | str, run: str | None = None) -> list[Volume]:
    """Every volume of a 3-D or 4-D NIfTI, stored values plus scl_slope/scl_inter."""
    path = Path(path)
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for a bad file
        raise ValueError(f"{path}: not a readable NIfTI file ({exc})") from exc
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image derives from it
        raise ValueError(f"{path}: not a NIfTI file")
    header = img.header
    data = np.asarray(cast(ArrayProxy, img.dataobj).get_unscaled())
    if data.ndim == 3:
        data = data[..., np.newaxis]
    if data.ndim != 4:
        raise ValueError(f"{path}: expected a 3-D or 4-D image, got shape {data.shape}")
    slope, inter = header.get_slope_inter()
    affine = img.get_sform() if header["sform_code"] > 0 else img.get_qform()
    if affine is None or not np.all(np.isfinite(affine)):
        affine = img.affine
    name = run or _NIFTI.sub("", path.name)
    tr, times = _tr_seconds(header), _slice_times(header)
    return [
        Volume(
            data=np.ascontiguousarray(data[..., t]),
            affine=affine,
            run=name,
            index=t,
            tr=tr,
            slice_timing=times,
            scl_slope=1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope),
            scl_inter=0.0 if inter is None or not np.isfinite(inter) else float(inter),
            header={"SourceFormat": "nifti"},
        )
        for t in range(data.shape[3])
    ]


def load_source(path: Path | str) -> dict[str, list[Volume]]:
    """A NIfTI file -> one run; a DICOM folder -> one run per series (acquisition order)."""
    path = Path(path)
    if path.is_file() and _NIFTI.search(path.name):
        return {_NIFTI.sub("", path.name): load_nifti(path)}
    if path.is_dir():
        from rtcontrol.scanner.series import scan_folder

        scan = scan_folder(path)
        if not scan.series:
            detail = "; ".join((scan.problems + scan.foreign)[:3])
            raise ValueError(f"{path}: no image series found{': ' + detail if detail else ''}")
        out: dict[str, list[Volume]] = {}
        for uid, volumes in scan.series.items():
            name = volumes[0].run or uid
            out[name if name not in out else f"{name}_{len(out)}"] = volumes
        return out
    if path.is_file():
        from rtcontrol.scanner.reader import read_file

        item = read_file(path)
        items = item if isinstance(item, list) else [item]
        volumes = [v for v in items if isinstance(v, Volume)]
        if len(volumes) != len(items):
            raise ValueError(f"{path}: one slice of a series; give the folder instead")
        return {volumes[0].run or path.stem: volumes}
    raise FileNotFoundError(f"{path}: no such file or folder")
