"""Read every series in a folder (offline: ``convert``, tests, the AFNI feeder).

``read_series(folder)`` maps each series UID to its volumes in acquisition order. Files that are
not images are skipped; unreadable ones are listed in :attr:`FolderScan.problems` by
:func:`scan_folder`, so a caller can say what was left out and why.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtcontrol.scanner.assemble import assemble_offline
from rtcontrol.scanner.errors import ForeignFile, IngestError
from rtcontrol.scanner.reader import SliceImage, read_file
from rtcontrol.scanner.volume import Volume

SKIP_NAMES = {"LICENSE", "README", ".DS_Store", "Thumbs.db"}


@dataclass
class FolderScan:
    series: dict[str, list[Volume]] = field(default_factory=dict)
    foreign: list[str] = field(default_factory=list)  # "path: reason"
    problems: list[str] = field(default_factory=list)  # incomplete/corrupt files, dropped or missing volumes
    warnings: list[str] = field(default_factory=list)  # nothing lost (an identical file given twice)
    files: int = 0


def scan_folder(folder: Path | str, recursive: bool = False) -> FolderScan:
    """Read every file under ``folder`` and group what they hold by series."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: no such folder")
    scan = FolderScan()
    volumes: dict[str, list[Volume]] = defaultdict(list)
    slices: dict[str, list[SliceImage]] = defaultdict(list)
    paths = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if p.is_file())
    for path in paths:
        if (path.name.startswith(".") or path.stem.split(".")[0] in SKIP_NAMES
                or path.suffix.lower() in (".json", ".txt", ".md")):
            continue
        scan.files += 1
        try:
            item = read_file(path, gzipped=True)
        except ForeignFile as exc:
            scan.foreign.append(str(exc))
            continue
        except IngestError as exc:
            scan.problems.append(f"{type(exc).__name__}: {exc}")
            continue
        if isinstance(item, SliceImage):  # gathered first: assembled below by the files' own tags
            slices[item.series_uid].append(item)
        elif isinstance(item, list):
            for v in item:
                volumes[v.series_uid].append(v)
        else:
            volumes[item.series_uid].append(item)
    for uid, items in slices.items():
        built, problems, warnings = assemble_offline(items)
        volumes[uid].extend(built)
        scan.problems.extend(problems)
        scan.warnings.extend(warnings)
    for uid, vols in volumes.items():
        if vols:
            vols.sort(key=lambda v: v.index)
            scan.series[uid] = _dedupe(vols, scan)
            _missing(scan.series[uid], scan.problems)
    return scan


def _dedupe(vols: list[Volume], scan: FolderScan) -> list[Volume]:
    out: list[Volume] = []
    for v in vols:
        if out and out[-1].index == v.index:
            same = out[-1].shape == v.shape and np.array_equal(out[-1].data, v.data)
            if same:
                scan.warnings.append(f"series {v.run}: volume {v.index} given twice (identical); one kept")
            else:
                scan.problems.append(f"series {v.run}: two different volumes with index {v.index}; kept the first")
            continue
        out.append(v)
    return out


def _missing(vols: list[Volume], problems: list[str]) -> None:
    """Name the volumes missing between the series' first and last (the NIfTI would close the gap)."""
    have = {v.index for v in vols}
    gone = [i for i in range(min(have), max(have)) if i not in have]
    if gone:
        shown = ", ".join(str(i) for i in gone[:20]) + (" ..." if len(gone) > 20 else "")
        problems.append(f"series {vols[0].run}: {len(gone)} volume(s) missing (index {shown}); "
                        "the written file has no gap for them")  # fmt: skip


def read_series(folder: Path) -> dict[str, list[Volume]]:
    """Every series in ``folder`` -> its volumes in acquisition order."""
    return scan_folder(folder).series
