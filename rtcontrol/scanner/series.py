"""Read every series in a folder (offline: ``convert``, tests, the AFNI feeder).

``read_series(folder)`` maps each series UID to its volumes in acquisition order. Files that are
not images are skipped; unreadable ones are listed in :attr:`FolderScan.problems` by
:func:`scan_folder`, so a caller can say what was left out and why.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from rtcontrol.scanner.assemble import SliceAssembler
from rtcontrol.scanner.errors import ForeignFile, IngestError
from rtcontrol.scanner.reader import SliceImage, read_file
from rtcontrol.scanner.volume import Volume

SKIP_NAMES = {"LICENSE", "README", ".DS_Store", "Thumbs.db"}


@dataclass
class FolderScan:
    series: dict[str, list[Volume]] = field(default_factory=dict)
    foreign: list[str] = field(default_factory=list)  # "path: reason"
    problems: list[str] = field(default_factory=list)  # incomplete/corrupt files, dropped volumes
    files: int = 0


def scan_folder(folder: Path | str, recursive: bool = False) -> FolderScan:
    """Read every file under ``folder`` and group what they hold by series."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: no such folder")
    scan = FolderScan()
    volumes: dict[str, list[Volume]] = defaultdict(list)
    assemblers: dict[str, SliceAssembler] = {}
    paths = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if p.is_file())
    for path in paths:
        if path.name.startswith(".") or path.stem.split(".")[0] in SKIP_NAMES or path.suffix.lower() in (".json", ".txt", ".md"):
            continue
        scan.files += 1
        try:
            item = read_file(path)
        except ForeignFile as exc:
            scan.foreign.append(str(exc))
            continue
        except IngestError as exc:
            scan.problems.append(f"{type(exc).__name__}: {exc}")
            continue
        if isinstance(item, SliceImage):
            assembler = assemblers.setdefault(item.series_uid, SliceAssembler(max_wait=None))
            volumes[item.series_uid].extend(assembler.add(item))
        elif isinstance(item, list):
            for v in item:
                volumes[v.series_uid].append(v)
        else:
            volumes[item.series_uid].append(item)
    for uid, assembler in assemblers.items():
        volumes[uid].extend(assembler.flush())
        scan.problems.extend(assembler.problems)
    for uid, vols in volumes.items():
        if vols:
            vols.sort(key=lambda v: v.index)
            scan.series[uid] = _dedupe(vols, scan.problems)
    return scan


def _dedupe(vols: list[Volume], problems: list[str]) -> list[Volume]:
    out: list[Volume] = []
    for v in vols:
        if out and out[-1].index == v.index:
            problems.append(f"series {v.run}: volume {v.index} delivered twice; kept the first")
            continue
        out.append(v)
    return out


def read_series(folder: Path) -> dict[str, list[Volume]]:
    """Every series in ``folder`` -> its volumes in acquisition order."""
    return scan_folder(folder).series
