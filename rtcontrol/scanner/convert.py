"""``main.py convert DICOM_DIR -o OUT_DIR``: every series in a folder to NIfTI + BIDS JSON sidecar.

One ``<SeriesNumber>_<SeriesDescription>.nii.gz`` and ``.json`` per series (``_e1``, ``_e2`` ...
per echo). Voxels keep the scanner's storage order (like dcm2niix); the affine says where they
are. The folder is read whole first and volumes are assembled by the files' own temporal tags,
whatever order the files are listed in; gzipped DICOM (``*.dcm.gz``) is read too.

Exit status: 0 when every series was written and agrees with the files (warnings such as an
identical duplicate file cost nothing); 1 when files were unusable or volumes are missing (each
reason printed; the rest is written); 2 when nothing could be converted (missing folder, no
images, only foreign files).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from rtcontrol.scanner.nifti_io import write_nifti
from rtcontrol.scanner.series import scan_folder
from rtcontrol.scanner.sidecar import series_name, sidecar, write_sidecar


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dicom_dir", type=Path, help="folder with the scanner's files (DICOM or NIfTI)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for .nii.gz + .json (created)")
    parser.add_argument("-r", "--recursive", action="store_true", help="also read files in sub-folders")
    parser.add_argument("--no-gzip", action="store_true", help="write .nii instead of .nii.gz")


def _echo_suffix(run: str) -> str:
    """'_e2' for the second echo of a multi-echo series (the reader names its runs so), else ''."""
    m = re.search(r"_e\d+$", run)
    return m.group(0) if m else ""


def _err(msg: str) -> None:
    print(f"convert: {msg}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    src: Path = args.dicom_dir
    if not src.exists():
        _err(f"{src}: no such folder")
        return 2
    if not src.is_dir():
        _err(f"{src}: not a folder (give the folder that holds the series' files)")
        return 2
    scan = scan_folder(src, recursive=args.recursive)
    if not scan.series:
        if scan.files == 0:
            hint = "" if args.recursive else " (series in sub-folders? add --recursive)"
            _err(f"{src}: no files to convert" + hint)
        else:
            _err(f"{src}: no readable image series among {scan.files} files "
                 f"({len(scan.foreign)} not scanner images, {len(scan.problems)} unreadable)")
            for line in (scan.problems + scan.foreign)[:10]:
                _err(f"  {line}")
        return 2
    try:
        args.output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _err(f"{args.output}: cannot create output folder ({exc.strerror or exc})")
        return 2
    failed = 0
    used: set[str] = set()
    suffix = ".nii" if args.no_gzip else ".nii.gz"
    for _uid, vols in sorted(scan.series.items(), key=lambda kv: (kv[1][0].header.get("SeriesNumber") or 0, kv[0])):
        base = name = series_name(vols[0].header, fallback=vols[0].run) + _echo_suffix(vols[0].run)
        n = 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        nii = args.output / f"{name}{suffix}"
        try:
            write_nifti(vols, nii)
        except (ValueError, OSError) as exc:
            failed += 1
            _err(f"series {name}: not written ({exc})")
            continue
        write_sidecar(args.output / f"{name}.json", sidecar(vols))
        shape = "x".join(str(x) for x in vols[0].shape)
        print(f"{nii}  {shape}x{len(vols)}  {vols[0].header.get('SourceFormat', '?')}")
    for line in scan.warnings:
        _err(f"warning: {line}")
    for line in scan.problems:
        _err(f"problem: {line}")
    if scan.foreign:
        _err(f"skipped {len(scan.foreign)} file(s) that are not scanner images")
    return 1 if failed or scan.problems else 0
