"""A scanner simulator: replay a recorded series into a watch folder at the TR pace.

Files are written the way a scanner's export writes them: for each volume its file appears, grows in
``chunks`` writes, then is closed; a one-file-per-slice series writes the slices of each volume spread
over the TR in acquisition order. The source is a DICOM folder (mosaic, enhanced, or per-slice; several
series are replayed one after another) or a NIfTI file (a 4-D file is written as one 3-D ``.nii`` per
volume, named ``<stem>_0001.nii`` ..., each after its JSON sidecar ``<stem>_0001.json``, as a scanner-side
dcm2niix writes them). The sidecar carries the run's RepetitionTime and SliceTiming (from the 4-D file's
own sidecar, else its header's pixdim[4] and slice fields) and the volume's AcquisitionNumber (1-based),
so the watcher gets each volume with the timing it was recorded with and its index (0-based) in order.

``main.py replay SERIES_DIR WATCH_DIR [--tr S]`` is the command; :func:`replay` the async API the
console uses. File writing runs in a thread, so the event loop is never blocked.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rtcontrol.files import atomic_write
from rtcontrol.scanner.errors import IngestError
from rtcontrol.scanner.volume import HEADER_ALLOWLIST

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class ReplayVolume:
    """One volume to write: source files to copy (in write order), or one time point of a 4-D NIfTI."""

    series: str
    index: int
    files: list[Path] = field(default_factory=list)
    nifti: tuple[Path, str] | None = None  # (4-D source, name of the 3-D file to write)
    sidecar: dict[str, Any] | None = None  # JSON sidecar written just before the volume's NIfTI file


@dataclass
class ReplayPlan:
    volumes: list[ReplayVolume]
    tr: float | None  # the series' own TR in seconds (None if no file says)
    skipped: list[str] = field(default_factory=list)  # files we could not read, with the reason


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def plan_replay(source: Path | str) -> ReplayPlan:
    """Read the source once and decide what to write for each volume, in acquisition order."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"replay source {source} does not exist")
    if source.is_file():
        if not _is_nifti(source):
            raise ValueError(f"{source}: a replay source is a DICOM folder or a NIfTI file (.nii/.nii.gz)")
        return _plan_nifti(source)
    return _plan_folder(source)


def _nifti_stem(path: Path) -> str:
    return path.name[: -len(".nii.gz")] if path.name.lower().endswith(".gz") else path.stem


def _plan_nifti(path: Path) -> ReplayPlan:
    import nibabel as nib

    img = nib.load(path)
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image derives from it
        raise ValueError(f"{path}: not a NIfTI image")
    stem = _nifti_stem(path)
    facts = nifti_timing(path, img.header)
    tr = facts.get("RepetitionTime")
    if img.ndim == 3:
        number = _read_side(path).get("AcquisitionNumber")
        side = {**facts, "AcquisitionNumber": number} if isinstance(number, int) else facts
        return ReplayPlan([ReplayVolume(stem, 0, files=[path], sidecar=side or None)], tr)
    if img.ndim != 4:
        raise ValueError(f"{path}: a {img.ndim}-D NIfTI file; replay needs 3-D or 4-D")
    # 1-based names and acquisition numbers, as scanner-side converters write them; the bytes are
    # made when written. The number in the sidecar fixes the index even if the stem ends in digits.
    volumes = [
        ReplayVolume(stem, t, nifti=(path, f"{stem}_{t + 1:04d}.nii"), sidecar={**facts, "AcquisitionNumber": t + 1})
        for t in range(img.shape[3])
    ]
    return ReplayPlan(volumes, tr)


def nifti_timing(path: Path, header: Any) -> dict[str, Any]:
    """The run's acquisition facts for each volume's sidecar: the source's own JSON sidecar
    (``<stem>.json``: RepetitionTime, SliceTiming and the allowlisted facts), else what the NIfTI
    header says (pixdim[4] in its time unit; slice_code/slice_duration along the third axis)."""
    side = _read_side(path)
    facts = {k: v for k, v in side.items()
             if k in HEADER_ALLOWLIST and k not in ("AcquisitionNumber", "NumberOfVolumes")}
    scale = {"msec": 1e-3, "usec": 1e-6}.get(header.get_xyzt_units()[1], 1.0)
    tr = side.get("RepetitionTime")
    zooms = header.get_zooms()
    if not isinstance(tr, (int, float)) or tr <= 0:
        tr = float(zooms[3]) * scale if len(zooms) > 3 and zooms[3] > 0 else None
    if tr:
        facts["RepetitionTime"] = float(tr)
    timing = side.get("SliceTiming")
    if timing is None:
        timing = _header_slice_times(header, scale)
    if timing is not None:
        facts["SliceTiming"] = [float(t) for t in timing]
    return facts


def _read_side(path: Path) -> dict[str, Any]:
    """The NIfTI file's own JSON sidecar (``<stem>.json``), or {} when it has none."""
    json_path = path.with_name(_nifti_stem(path) + ".json")
    if not json_path.is_file():
        return {}
    try:
        loaded = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{json_path}: the sidecar of {path.name} is not readable JSON ({exc})") from exc
    return loaded if isinstance(loaded, dict) else {}


def _header_slice_times(header: Any, scale: float) -> list[float] | None:
    """Slice times from the NIfTI slice fields, when they describe the third axis; else None."""
    try:
        if header.get_dim_info()[2] != 2 or not header["slice_code"] or not header["slice_duration"]:
            return None
        times = header.get_slice_times()
    except Exception:  # nibabel's HeaderDataError and friends: the fields are incomplete
        return None
    if any(t is None for t in times):
        return None  # slices outside slice_start..slice_end have no time
    return [round(float(t) * scale, 6) for t in times]


def _nifti_volume_bytes(path: Path, t: int) -> bytes:
    import nibabel as nib
    import numpy as np

    img = nib.load(path)
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image derives from it
        raise ValueError(f"{path}: not a NIfTI image")
    data = np.asanyarray(img.dataobj[..., t])
    header = img.header.copy()
    header.set_data_shape(data.shape)
    out = nib.Nifti1Image(data, img.affine, header)
    out.set_sform(img.get_sform(), int(img.header["sform_code"]))
    out.set_qform(img.get_qform(), int(img.header["qform_code"]))
    return out.to_bytes()


def _plan_folder(folder: Path) -> ReplayPlan:
    from rtcontrol.scanner.assemble import group_offline
    from rtcontrol.scanner.reader import SliceImage, read_file
    from rtcontrol.scanner.volume import Volume

    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    volumes: dict[tuple[str, int], ReplayVolume] = {}
    slices: dict[str, list[SliceImage]] = {}
    series_order: dict[str, tuple] = {}
    tr: float | None = None
    skipped = []
    for path in files:
        try:
            item = read_file(path, gzipped=True)
        except IngestError as exc:
            skipped.append(f"{path.name}: {exc.reason}")
            continue
        if isinstance(item, list) and _is_nifti(path):  # a 4-D NIfTI: one 3-D file per volume
            sub = _plan_nifti(path)
            tr = tr or sub.tr
            for rv in sub.volumes:
                volumes[(str(path), rv.index)] = replace(rv, series=str(path))
            series_order.setdefault(str(path), (0, 0))
            continue
        for part in item if isinstance(item, list) else [item]:
            if isinstance(part, Volume):
                key = part.series_uid or part.run
                tr = tr or part.tr
                series_order.setdefault(key, (part.header.get("SeriesNumber") or 0, part.acquisition_time or 0))
                if any(path in v.files for v in volumes.values()):
                    continue  # a file holding several volumes or echoes is written once, with the first
                rv = volumes.setdefault((key, part.index), ReplayVolume(key, part.index))
                rv.files.append(path)
            elif isinstance(part, SliceImage):
                tr = tr or part.tr
                slices.setdefault(part.series_uid, []).append(part)
                series_order.setdefault(part.series_uid, (part.header.get("SeriesNumber") or 0, 0))
    for uid, items in slices.items():
        groups, _, problems, _warnings = group_offline(items)
        skipped.extend(problems)
        for t, group in groups.items():
            group.sort(key=lambda s: (s.slice_time if s.slice_time is not None else 0.0, s.slice_position))
            volumes[(uid, t)] = ReplayVolume(uid, t, files=[s.path for s in group])
    if not volumes:
        why = "; ".join(skipped[:3]) or "the folder is empty"
        raise ValueError(f"{folder}: no scanner images to replay ({why})")
    ordered = sorted(volumes.values(), key=lambda v: (series_order.get(v.series, (0, 0)), v.series, v.index))
    return ReplayPlan(ordered, tr, skipped)


def _write_from(path: Path, content: Callable[[], bytes], chunks: int, pause: float) -> None:
    """Get the bytes and write them (in a worker thread: both may take a while)."""
    _write_chunked(path, content(), chunks, pause)


def _source_item(watch_dir: Path, src: Path) -> tuple[Path, Callable[[], bytes]]:
    """Where a source file goes and how to get its bytes: a gzipped DICOM (``x.dcm.gz``) is written
    decompressed (``x.dcm``), as a scanner writes it."""
    if src.name.lower().endswith(".gz") and not _is_nifti(src):
        from rtcontrol.scanner.nifti_io import MAX_GUNZIP, gunzip_bounded

        return watch_dir / src.name[:-3], lambda: gunzip_bounded(src, src.read_bytes(), MAX_GUNZIP)
    return watch_dir / src.name, src.read_bytes


def _write_sidecar(dst: Path, facts: dict[str, Any]) -> None:
    """Write the JSON sidecar whole (via a temporary name the watcher ignores), so its NIfTI never
    meets a half-written one."""
    atomic_write(dst, json.dumps(facts, indent=1))


def _write_chunked(dst: Path, data: bytes, chunks: int, pause: float) -> None:
    """Create ``dst`` and write ``data`` in ``chunks`` parts with short pauses, then close (a scanner's write)."""
    n = max(1, chunks)
    step = -(-len(data) // n) or 1
    with open(dst, "wb") as f:
        for i, start in enumerate(range(0, max(len(data), 1), step)):
            if i and pause > 0:
                f.flush()
                time.sleep(pause)
            f.write(data[start : start + step])


async def replay(
    source: Path | str | ReplayPlan,
    watch_dir: Path | str,
    tr: float | None = None,
    *,
    stop: asyncio.Event | None = None,
    on_volume: Callable[[int, list[Path]], None] | None = None,
    chunks: int = 4,
    chunk_pause: float = 0.002,
    start_index: int = 0,
    count: int | None = None,
) -> int:
    """Write ``source`` into ``watch_dir`` volume by volume at ``tr`` (default: the series' own TR).

    Returns the number of volumes written. ``on_volume(i, paths)`` is called after volume ``i`` is
    written; setting ``stop`` ends the replay between two files. ``source`` may also be a plan made
    earlier with :func:`plan_replay`.
    """
    watch_dir = Path(watch_dir)
    if not watch_dir.is_dir():
        raise FileNotFoundError(f"watch folder {watch_dir} does not exist")
    plan = source if isinstance(source, ReplayPlan) else await asyncio.to_thread(plan_replay, source)
    pace = tr if tr is not None else (plan.tr or 2.0)
    if pace <= 0:
        raise ValueError(f"TR must be positive, got {pace}")
    todo = [v for v in plan.volumes if v.index >= start_index]
    if count is not None:
        todo = todo[:count]
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    written = 0
    for n, vol in enumerate(todo):
        start = t0 + n * pace
        paths: list[Path] = []
        items: list[tuple[Path, Callable[[], bytes]]]
        if vol.nifti is not None:
            src_4d, name = vol.nifti
            items = [(watch_dir / name, functools.partial(_nifti_volume_bytes, src_4d, vol.index))]
        else:
            items = [_source_item(watch_dir, p) for p in vol.files]
        for j, (dst, content) in enumerate(items):
            when = start + j * pace / len(items)  # slices of one volume spread over the TR
            if await _wait_until(loop, when, stop):
                return written
            if j == 0 and vol.sidecar is not None:
                side = dst.with_name(_nifti_stem(dst) + ".json")
                await asyncio.to_thread(_write_sidecar, side, vol.sidecar)
            await asyncio.to_thread(_write_from, dst, content, chunks, chunk_pause)
            paths.append(dst)
        written += 1
        if on_volume is not None:
            on_volume(vol.index, paths)
    return written


async def _wait_until(loop: asyncio.AbstractEventLoop, when: float, stop: asyncio.Event) -> bool:
    """Sleep until ``when`` (loop time); True if ``stop`` was set meanwhile."""
    delay = when - loop.time()
    if stop.is_set():
        return True
    if delay > 0:
        try:
            await asyncio.wait_for(stop.wait(), delay)
            return True
        except TimeoutError:
            pass
    return stop.is_set()


# ---- command line ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="a DICOM series folder, or a NIfTI file (4-D: one file per volume)")
    parser.add_argument("watch_dir", type=Path, help="the folder to write into (created if missing)")
    parser.add_argument("--tr", type=float, default=None, help="seconds between volumes (default: the series' TR)")
    parser.add_argument("--chunks", type=int, default=4, help="writes per file, as a scanner's export grows it")
    parser.add_argument("--start-index", type=int, default=0, help="first volume index to write (0-based)")
    parser.add_argument("--count", type=int, default=None, help="write at most this many volumes")


def run(args: argparse.Namespace) -> int:
    if not args.source.exists():
        print(f"replay: {args.source} does not exist", file=sys.stderr)
        return 2
    if args.tr is not None and args.tr <= 0:
        print(f"replay: --tr must be positive, got {args.tr}", file=sys.stderr)
        return 2
    args.watch_dir.mkdir(parents=True, exist_ok=True)

    def progress(index: int, paths: list[Path]) -> None:
        print(f"volume {index}: {len(paths)} file(s) -> {args.watch_dir}", flush=True)

    try:
        plan = plan_replay(args.source)
        for note in plan.skipped:
            print(f"replay: skipping {note}", file=sys.stderr)
        n = asyncio.run(replay(plan, args.watch_dir, args.tr, on_volume=progress, chunks=args.chunks,
                               start_index=args.start_index, count=args.count))  # fmt: skip
    except (ValueError, FileNotFoundError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("replay: stopped", file=sys.stderr)
        return 130
    print(f"replayed {n} volumes into {args.watch_dir}")
    return 0
