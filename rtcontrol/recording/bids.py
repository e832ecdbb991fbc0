"""Turn a recorded run folder (journal + raw volumes) into a de-identified BIDS dataset.

Written for each run, under ``bids_root``::

    dataset_description.json, README, participants.tsv                      (created once, then kept)
    sub-S/ses-E/func/sub-S_ses-E_task-T_run-NN_bold.nii.gz  + _bold.json     the volumes and their sidecar
    sub-S/ses-E/func/sub-S_ses-E_task-T_run-NN_events.tsv   + _events.json   feedback and responses
    derivatives/rtcontrol/dataset_description.json
    derivatives/rtcontrol/sub-S/ses-E/func/..._desc-confounds_timeseries.tsv/.json   motion and quality per volume
    derivatives/rtcontrol/sub-S/ses-E/func/..._desc-timeline_timeseries.tsv/.json    pipeline stamps per volume
    derivatives/rtcontrol/sub-S/ses-E/func/..._desc-runlog.json                      settings, events, errors, summary

Nothing identifying goes in: volume headers hold only allowlisted acquisition facts, settings lose
secrets and local paths, and no dates are written. An existing run is never overwritten: the next free
run number is used and the runlog says so.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from rtcontrol import __version__
from rtcontrol.files import atomic_file, atomic_write
from rtcontrol.recording.journal import JournalContents, append_record, read_journal
from rtcontrol.recording.results import RunResults, run_results
from rtcontrol.recording.runinfo import RecordingError, describe_os_error, load_run_info, public_settings
from rtcontrol.rigid import framewise_displacement
from rtcontrol.scanner.sidecar import consensus_timing
from rtcontrol.scanner.sidecar import sidecar as scanner_sidecar
from rtcontrol.scanner.volume import BIDS_HEADER_FIELDS, STAGES, Volume

BIDS_VERSION = "1.8.0"
GZIP_LEVEL = 1  # as nibabel: fast, and EPI compresses little better at higher levels
MOTION = ("tx", "ty", "tz", "rx", "ry", "rz")
#: The confounds table's own columns (a project metric of the same name is written as ``project_<name>``).
OWN_CONFOUNDS = ("volume", "global_signal", "dvars", "feedback", "result_source", "framewise_displacement")
#: Stages that say when the person saw the feedback, best first.
DELIVERY_STAGES = ("displayed", "consumer_taken", "subject_delivered", "feedback_received", "result_ready")

#: The JSON type BIDS expects for the sidecar fields that are not text.
FIELD_TYPES: dict[str, type] = {
    "MagneticFieldStrength": float, "EchoTime": float, "FlipAngle": float, "ImageType": list, "SeriesNumber": int,
    "SliceThickness": float, "SpacingBetweenSlices": float, "MultibandAccelerationFactor": int,
}
#: Not copied from the header: the run's TR is written from the run itself, and the time of day stays out of
#: the de-identified data.
NOT_COPIED = ("RepetitionTime", "AcquisitionTime")
#: Allowlisted header facts copied to the bold sidecar (the one list is the scanner's BIDS_HEADER_FIELDS),
#: with the JSON type BIDS expects.
SIDECAR_FACTS: dict[str, type] = {k: FIELD_TYPES.get(k, str) for k in BIDS_HEADER_FIELDS if k not in NOT_COPIED}


@dataclass(frozen=True)
class Labels:
    subject: str
    session: str
    task: str
    run: int

    def stem(self, run: int | None = None) -> str:
        return f"sub-{self.subject}_ses-{self.session}_task-{self.task}_run-{run or self.run:02d}"

    def func_dir(self, root: Path) -> Path:
        return root / f"sub-{self.subject}" / f"ses-{self.session}" / "func"


def _label(value: Any, default: str) -> str:
    text = re.sub(r"[^A-Za-z0-9]", "", str(value if value is not None else ""))
    return text or default


def labels_from_settings(settings: dict[str, Any]) -> tuple[Labels, float | None]:
    """BIDS labels and the TR from run settings (``RunSettings.to_dict()`` with a [run] table, or flat)."""
    run = settings.get("run")
    run_table: dict[str, Any] = run if isinstance(run, dict) else settings
    try:
        run_number = int(run_table.get("run", 1))
    except (TypeError, ValueError):
        run_number = 1
    subject = run_table.get("subject") if not isinstance(run_table.get("subject"), dict) else None
    tr = run_table.get("tr")
    labels = Labels(
        subject=_label(subject, "01"),
        session=_label(run_table.get("session"), "01"),
        task=_label(run_table.get("task"), "rt"),
        run=max(1, run_number),
    )
    return labels, float(tr) if isinstance(tr, (int, float)) and tr > 0 else None


# --- the whole run ------------------------------------------------------------------------------


def write_run(run_dir: Path | str, bids_root: Path | str, *, recovered: bool = False) -> Path:
    """Write the BIDS files of one recorded run; return the path of its ``_bold.nii.gz``."""
    run_dir, bids_root = Path(run_dir), Path(bids_root)
    contents = read_journal(run_dir)
    info = load_run_info(run_dir)
    labels, settings_tr = labels_from_settings(info.get("settings", {}))
    records = contents.volumes()
    if not records:
        raise RecordingError(f"{run_dir}: no volume was recorded, so there is no BIDS run to write")

    first_index = int(records[0]["index"])
    count = int(records[-1]["index"]) - first_index + 1
    present = {int(r["index"]) for r in records}
    missing = [first_index + i for i in range(count) if first_index + i not in present]
    tr = _first(r.get("tr") for r in records) or settings_tr
    if not tr:
        raise RecordingError(f"{run_dir}: the repetition time is unknown (not in the volumes nor the settings)")

    series = RecordedSeries(contents, records, first_index, count)
    affine = np.asarray(records[0]["affine"], dtype=np.float64)
    timing = consensus_timing([r.get("slice_timing") for r in records[:4]])  # as convert's sidecar
    slice_timing = list(timing) if timing is not None else None
    header = records[0].get("header") or {}

    try:
        func = labels.func_dir(bids_root)
        func.mkdir(parents=True, exist_ok=True)
        run_number = _free_run_number(func, labels)
        stem = labels.stem(run_number)
        _write_root_files(bids_root, labels)
        bold = func / f"{stem}_bold.nii.gz"
        mean_image = _write_nifti(bold, series, affine, tr, slice_timing)
        _write_json(func / f"{stem}_bold.json", bold_sidecar(labels.task, tr, slice_timing, header, count))

        results = run_results(contents)
        timelines = merged_timelines(contents, results)
        ref = scan_clock_origin(records, tr)
        responses = list(contents.of_type("response"))
        _write_events(func / f"{stem}_events", results.live, responses, timelines, ref, tr)

        deriv = labels.func_dir(bids_root / "derivatives" / "rtcontrol")
        deriv.mkdir(parents=True, exist_ok=True)
        _write_derivative_description(bids_root / "derivatives" / "rtcontrol")
        indices = list(range(first_index, first_index + count))
        summary = _write_confounds(deriv / f"{stem}_desc-confounds_timeseries", series, mean_image, results)
        _write_timeline(deriv / f"{stem}_desc-timeline_timeseries", indices, records, timelines, ref)
        runlog = {
            "rtcontrol": __version__,
            "Sources": [f"bids:raw:{bold.relative_to(bids_root).as_posix()}"],
            "settings": info.get("settings", {}),
            "requested_run": labels.run,
            "written_run": run_number,
            "recovered_after_interruption": recovered or not _stopped_cleanly(contents),
            "volumes": {"recorded": len(records), "first_index": first_index, "missing": missing},
            "torn_last_line": contents.torn_tail,
            "summary": summary,
            "results": _results_log(results, indices),
            "events": [_event_row(r, ref) for r in contents.of_type("event")],
        }
        if run_number != labels.run:
            runlog["note"] = (f"run-{labels.run:02d} already existed in {func}; "
                              f"this run was written as run-{run_number:02d}")
        _write_json(deriv / f"{stem}_desc-runlog.json", runlog)
    except OSError as exc:
        raise RecordingError(
            f"{describe_os_error(exc, bids_root)}; the run is kept in {run_dir} and can be written again later"
        ) from exc

    append_record(run_dir, {"type": "finish", "bold": str(bold), "run": run_number})  # find_interrupted skips it now
    return bold


def _first(values: Iterable[Any]) -> Any:
    return next((v for v in values if v), None)


def _stopped_cleanly(contents: JournalContents) -> bool:
    return any(r.get("kind") == "stop" for r in contents.of_type("event"))


def _free_run_number(func: Path, labels: Labels) -> int:
    run = labels.run
    while (func / f"{labels.stem(run)}_bold.nii.gz").exists():
        run += 1
    return run


# --- the image --------------------------------------------------------------------------------------


class RecordedSeries:
    """The run's volumes read back one at a time from the raw file (a long run never sits in memory whole).

    Volumes share one dtype and scaling, kept as stored; if the scaling changed during the run, every
    volume is given as float32 real values instead. A missing index reads as zeros.
    """

    def __init__(self, contents: JournalContents, records: list[dict], first: int, count: int) -> None:
        shapes = {tuple(r["shape"]) for r in records}
        if len(shapes) != 1:
            raise RecordingError(
                f"{contents.run_dir}: the volumes have different shapes {sorted(shapes)}; cannot make one 4-D image"
            )
        self.contents, self.first, self.count = contents, first, count
        self.shape: tuple[int, int, int] = shapes.pop()
        self.by_index = {int(r["index"]): r for r in records}
        self.indices = list(range(first, first + count))
        self.missing = [i for i in self.indices if i not in self.by_index]
        scales = {(float(r["scl_slope"]), float(r["scl_inter"])) for r in records}
        self.mixed = len(scales) > 1
        self.dtype = np.dtype(np.float32) if self.mixed else np.result_type(*{np.dtype(r["dtype"]) for r in records})
        self.slope, self.inter = (1.0, 0.0) if self.mixed else scales.pop()

    def __iter__(self) -> Iterator[tuple[int, np.ndarray | None]]:
        """(index, stored values in the series dtype) per time point; None where the volume is missing."""
        for index in self.indices:
            r = self.by_index.get(index)
            if r is None:
                yield index, None
                continue
            vol = self.contents.volume_data(r)
            if self.mixed:
                vol = vol.astype(np.float32) * np.float32(r["scl_slope"] or 1.0) + np.float32(r["scl_inter"])
            yield index, vol.astype(self.dtype.newbyteorder("<"), copy=False)

    def real(self, stored: np.ndarray) -> np.ndarray:
        out = stored.astype(np.float32)
        if self.slope not in (0.0, 1.0) or self.inter != 0.0:
            out = out * np.float32(self.slope) + np.float32(self.inter)
        return out


def _write_nifti(path: Path, series: RecordedSeries, affine: np.ndarray, tr: float,
                 slice_timing: list[float] | None) -> np.ndarray:
    """Stream the 4-D NIfTI volume by volume (each volume's Fortran-order bytes are contiguous in the file).

    Returns the mean image (stored values, present volumes only), which the confounds need.
    """
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(series.dtype)
    hdr.set_data_shape((*series.shape, series.count))
    hdr.set_xyzt_units("mm", "sec")
    hdr.set_qform(affine, code=1)
    hdr.set_sform(affine, code=1)
    hdr.set_zooms((*np.sqrt((affine[:3, :3] ** 2).sum(axis=0)), float(tr)))
    if series.slope not in (0.0, 1.0) or series.inter != 0.0:
        hdr.set_slope_inter(series.slope, series.inter)
    if slice_timing:
        hdr.set_dim_info(slice=2)
    hdr.set_data_offset(352)
    total = np.zeros(series.shape, dtype=np.float64)
    present = 0
    zeros = np.zeros(series.shape, dtype=series.dtype)
    with atomic_file(path) as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL) as fh:
        head = io.BytesIO()
        hdr.write_to(head)  # 348 header bytes + the 4-byte "no extensions" flag
        fh.write(head.getvalue().ljust(352, b"\x00"))
        for _, vol in series:
            if vol is None:
                vol = zeros
            else:
                total += vol
                present += 1
            fh.write(vol.tobytes(order="F"))
    return total / max(present, 1)


def bold_sidecar(task: str, tr: float, slice_timing: list[float] | None, header: dict[str, Any],
                 volumes: int | None = None) -> dict[str, Any]:
    """The ``_bold.json`` fields: BIDS-required ones plus the allowlisted acquisition facts in BIDS units.

    The facts come through the converter's sidecar writer (``rtcontrol.scanner.sidecar``), so ``convert``
    and the recorder agree; each known field is then checked for the JSON type BIDS expects (a value that
    does not fit is left out rather than failing validation).
    """
    facts: dict[str, Any] = dict(header)
    probe = Volume(data=np.zeros((1, 1, 1), np.uint8), affine=np.eye(4), tr=tr, header=header)
    facts.update(scanner_sidecar([probe]))
    out: dict[str, Any] = {"TaskName": task, "RepetitionTime": float(tr)}
    if slice_timing and all(0 <= t < tr for t in slice_timing):
        out["SliceTiming"] = [round(float(t), 6) for t in slice_timing]
    for key, kind in SIDECAR_FACTS.items():
        value = facts.get(key)
        if value is None or value == "" or value == []:
            continue
        try:
            if kind is list:
                value = [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value).split("\\")
            elif kind is int:
                value = int(value)
            elif kind is float:
                value = float(value)
            else:
                value = str(value)
        except (TypeError, ValueError):
            continue
        if key == "EchoTime" and isinstance(value, float) and value > 1.0:  # milliseconds (DICOM) -> seconds (BIDS)
            value = value / 1000.0
        if key == "PhaseEncodingDirection" and isinstance(value, str) and not re.fullmatch(r"[ijk]-?", value):
            continue
        out[key] = value
    for key in ("SourceFormat", "ConversionSoftware", "ConversionSoftwareVersion"):
        if isinstance(facts.get(key), str):
            out[key] = facts[key]
    if volumes:
        out["NumberOfVolumes"] = int(volumes)
    return out


# --- time -------------------------------------------------------------------------------------------


def merged_timelines(contents: JournalContents, results: RunResults | None = None) -> dict[int, dict[str, float]]:
    """Every stamp known per volume index, from volume, feedback and timeline records (first stamp wins), and
    for a volume with only a catch-up result, that result's stamps (when the restarted worker processed it)."""
    out: dict[int, dict[str, float]] = {}
    for r in contents.records:
        if r.get("type") in ("volume", "feedback", "timeline") and "index" in r:
            stamps = out.setdefault(int(r["index"]), {})
            for stage, t in (r.get("timeline") or {}).items():
                if t is not None and stage in STAGES:
                    stamps.setdefault(stage, float(t))
    for index, result in (results.by_index.items() if results else ()):
        if result.source == "catch_up":
            stamps = out.setdefault(index, {})
            for stage, t in result.timeline.items():
                if stage in STAGES:
                    stamps.setdefault(stage, t)
    return out


def scan_clock_origin(records: list[dict], tr: float) -> float:
    """The console's monotonic time of the scan's start, estimated from the earliest-arriving volume.

    Volume ``i`` cannot arrive before ``i * TR`` after the scan starts, so ``min(arrival_i - i * TR)``
    is the scan start plus the smallest reconstruction delay. Onsets in events.tsv are relative to it.
    """
    first = int(records[0]["index"])
    arrivals = []
    for r in records:
        stamps = r.get("timeline") or {}
        t = stamps.get("file_seen") or stamps.get("file_complete") or stamps.get("parsed") or r.get("t")
        if t is not None:
            arrivals.append(float(t) - (int(r["index"]) - first) * tr)
    return min(arrivals) if arrivals else 0.0


# --- events.tsv ---------------------------------------------------------------------------------------

EVENT_COLUMNS = {
    "onset": {"Description": "Seconds from the scan's start (the first volume's arrival at the console, less the "
              "smallest reconstruction delay seen) to when the person was shown the feedback or responded",
              "Units": "s"},
    "duration": {"Description": "Feedback: until the next feedback (one TR for the last); responses: 0", "Units": "s"},
    "trial_type": {"Description": "What happened", "Levels": {
        "feedback": "feedback shown for one volume (results never shown, such as a restarted worker's catch-up, "
                    "are in the confounds derivative)",
        "response": "a response from the person in the scanner"}},
    "value": {"Description": "The feedback value (a number, or JSON for structured feedback) or the response given"},
    "volume": {"Description": "Index of the volume the feedback was computed from "
               "(responses: the volume given, if any)"},
    "stage": {"Description": "Which timeline stage gave the onset (displayed is best; see the timeline derivative)"},
    "latency": {"Description": "From the volume file appearing on the console to that stage", "Units": "s"},
}


def _write_events(base: Path, feedback: list[dict], responses: list[dict], timelines: dict[int, dict[str, float]],
                  ref: float, tr: float) -> None:
    rows: list[dict[str, Any]] = []
    for r in feedback:
        index = int(r["index"])
        stamps = {**timelines.get(index, {}), **{k: v for k, v in (r.get("timeline") or {}).items() if v is not None}}
        stage = next((s for s in DELIVERY_STAGES if s in stamps), None)
        t = stamps[stage] if stage else r.get("t")
        seen = stamps.get("file_seen")
        rows.append({
            "onset": t - ref if t is not None else None,
            "trial_type": "feedback",
            "value": _cell_value(r.get("feedback")),
            "volume": index,
            "stage": stage or "recorded",
            "latency": (t - seen) if (t is not None and seen is not None) else None,
        })
    rows.sort(key=lambda row: (row["onset"] is None, row["onset"] or 0.0))
    for i, row in enumerate(rows):
        nxt = rows[i + 1]["onset"] if i + 1 < len(rows) else None
        row["duration"] = (nxt - row["onset"]) if (nxt is not None and row["onset"] is not None) else tr
    for r in responses:
        rows.append({
            "onset": float(r["when"]) - ref,
            "duration": 0.0,
            "trial_type": "response",
            "value": _cell_value(r.get("value")),
            "volume": r.get("index"),
            "stage": "response",
            "latency": None,
        })
    rows = [row for row in rows if row["onset"] is not None]
    rows.sort(key=lambda row: row["onset"])
    _write_tsv(base.with_suffix(".tsv"), list(EVENT_COLUMNS), rows)
    _write_json(base.with_suffix(".json"), EVENT_COLUMNS)


def _cell_value(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return value


# --- derivatives --------------------------------------------------------------------------------------


def _write_confounds(base: Path, series: RecordedSeries, mean_image: np.ndarray,
                     results: RunResults) -> dict[str, Any]:
    """Motion (from the project's metrics), framewise displacement, global signal, DVARS and the feedback per volume.

    A volume's metrics and feedback come from its live result, or else from its catch-up result (computed by a
    restarted worker, not shown to the subject); ``result_source`` says which, so no volume's metrics are lost."""
    indices, missing = series.indices, series.missing
    mask = mean_image > 0.5 * float(mean_image.mean())  # brain: the mean image above half its mean
    gsr = np.full(len(indices), np.nan)
    dvars = np.full(len(indices), np.nan)
    total = np.zeros(int(mask.sum()))
    total_sq = np.zeros(int(mask.sum()))
    prev: np.ndarray | None = None
    for i, (_, vol) in enumerate(series):
        if vol is None:
            prev = None
            continue
        v = series.real(vol)[mask].astype(np.float64)
        gsr[i] = v.mean() if v.size else np.nan
        if prev is not None:
            dvars[i] = np.sqrt(np.mean((v - prev) ** 2))
        total += v
        total_sq += v * v
        prev = v
    present = len(indices) - len(missing)

    by_index = results.by_index
    metric_names: list[str] = []
    for index in sorted(by_index):
        for name, v in by_index[index].metrics.items():
            if name not in metric_names and isinstance(v, (int, float)) and not isinstance(v, bool):
                metric_names.append(name)
    columns = ["volume", "global_signal", "dvars", "feedback", "result_source"]
    motion = [m for m in MOTION if m in metric_names]
    if len(motion) == 6:
        columns += list(MOTION) + ["framewise_displacement"]
    # the project's other metrics; one named like a column of this table gets a column of its own, renamed
    metric_column: dict[str, str] = {}  # column -> the project's metric name
    taken = {*columns, *OWN_CONFOUNDS}
    for name in metric_names:
        if len(motion) == 6 and name in MOTION:
            continue
        column = name
        while column in taken:
            column = f"project_{column}"
        taken.add(column)
        metric_column[column] = name
    columns += list(metric_column)

    rows: list[dict[str, Any]] = []
    prev_motion: np.ndarray | None = None
    for i, idx in enumerate(indices):
        result = by_index.get(idx)
        metrics = result.metrics if result else {}
        row: dict[str, Any] = {"volume": idx, "global_signal": gsr[i], "dvars": dvars[i],
                               "result_source": result.source if result else None}
        value = result.feedback if result else None
        row["feedback"] = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        for column, name in metric_column.items():
            row[column] = metrics.get(name)
        if len(motion) == 6:
            row.update({m: metrics.get(m) for m in MOTION})
            params = [metrics.get(m) for m in MOTION]
            if all(isinstance(p, (int, float)) for p in params):
                cur = np.asarray(params, float)
                row["framewise_displacement"] = (framewise_displacement(prev_motion, cur)
                                                 if prev_motion is not None else 0.0)
                prev_motion = cur
        rows.append(row)
    _write_tsv(base.with_suffix(".tsv"), columns, rows)

    described = {
        "volume": {"Description": "Volume index in the run (0 = first volume)"},
        "global_signal": {"Description": "Mean of the brain voxels (mean image above half its mean)",
                          "Units": "arbitrary"},
        "dvars": {"Description": "RMS over brain voxels of the change since the previous volume", "Units": "arbitrary"},
        "feedback": {"Description": "The numeric feedback the project returned for this volume "
                     "(shown to the subject only where result_source is live)"},
        "result_source": {
            "Description": "Where this row's feedback and project metrics come from",
            "Levels": {
                "live": "the project's result as it came during the scan; the feedback was passed on to the subject",
                "catch_up": "computed again by a restarted worker while it rebuilt the project's state from the "
                            "recorded volumes (the worker was down or catching up when the volume arrived); "
                            "recorded, never shown to the subject",
                "n/a": "no result was recorded for this volume (its metrics are n/a)",
            },
        },
        "framewise_displacement": {"Description": "Power et al. FD from the motion estimates (50 mm sphere)",
                                   "Units": "mm"},
    }
    for m in MOTION[:3]:
        described[m] = {"Description": f"Translation along {m[1].upper()} (rtcontrol.rigid: R, A, S world axes)",
                        "Units": "mm"}
    for m in MOTION[3:]:
        described[m] = {"Description": f"Rotation about {m[1].upper()} (rtcontrol.rigid: R, A, S world axes)",
                        "Units": "degrees"}
    for column, name in metric_column.items():
        described[column] = {"Description": f"Metric '{name}' reported by the project"
                             + (f" (renamed: '{name}' is a column of this table)" if column != name else "")}
    _write_json(base.with_suffix(".json"), {c: described[c] for c in columns})

    summary: dict[str, Any] = {"brain_voxels": int(mask.sum())}
    if present > 2 and total.size:
        mu = total / present
        sd = np.sqrt(np.maximum(total_sq / present - mu * mu, 0.0))
        tsnr = mu[sd > 0] / sd[sd > 0]
        summary["tsnr_median"] = float(np.median(tsnr)) if tsnr.size else None
    fd = [d for r in rows if (d := r.get("framewise_displacement")) is not None]
    if fd:
        summary["framewise_displacement_mean_mm"] = float(np.mean(fd))
        summary["framewise_displacement_max_mm"] = float(np.max(fd))
    return summary


def _results_log(results: RunResults, indices: list[int]) -> dict[str, Any]:
    """The runlog's account of each volume's result (the confounds' result_source, summed up)."""
    return {
        "live": len(results.indices("live")),
        "catch_up_only": results.indices("catch_up"),
        "none": [i for i in indices if i not in results.by_index],
        "catch_up_also_shown_live": results.catch_up_and_live,
        "repeated_live_records_ignored": results.repeated_live,
        "repeated_catch_up_records_replaced": results.repeated_catch_up,
        "note": "confounds rows take the live result, else the catch-up one (result_source says which); "
                "events.tsv lists only feedback shown live",
    }


def _write_timeline(base: Path, indices: list[int], records: list[dict], timelines: dict[int, dict[str, float]],
                    ref: float) -> None:
    acq = {int(r["index"]): r.get("acquisition_time") for r in records}
    columns = ["volume", "acquisition_time", *STAGES]
    rows = []
    for idx in indices:
        stamps = timelines.get(idx, {})
        row = {"volume": idx, "acquisition_time": acq.get(idx)}
        row.update({s: (stamps[s] - ref) if s in stamps else None for s in STAGES})
        rows.append(row)
    _write_tsv(base.with_suffix(".tsv"), columns, rows)
    meta: dict[str, Any] = {
        "volume": {"Description": "Volume index in the run"},
        "acquisition_time": {"Description": "Scanner clock at acquisition, seconds since midnight (no date)",
                             "Units": "s"},
    }
    for s in STAGES:
        meta[s] = {"Description": f"When the volume reached stage '{s}', seconds from the scan's start as in "
                                  "events.tsv (console clock; remote stamps translated by the link); for a volume "
                                  "whose result is catch-up (the confounds' result_source), when the restarted "
                                  "worker processed it", "Units": "s"}
    _write_json(base.with_suffix(".json"), meta)


_FOLDERS = re.compile(r"""(?:[A-Za-z]:)?[\\/](?:[^\s\\/:'"]+[\\/])+""")


def redact_paths(text: Any) -> Any:
    """Folders in a message become '.../' (a scanner's export folder is often named after the patient)."""
    return _FOLDERS.sub(".../", text) if isinstance(text, str) else text


def _event_row(r: dict[str, Any], ref: float) -> dict[str, Any]:
    t = r.get("t")
    data = public_settings(r.get("data") or {})
    return {"time": (t - ref) if t is not None else None, "kind": r.get("kind"),
            "message": redact_paths(r.get("message")), "data": {k: redact_paths(v) for k, v in data.items()}}


# --- dataset files ------------------------------------------------------------------------------------


def _write_root_files(root: Path, labels: Labels) -> None:
    root.mkdir(parents=True, exist_ok=True)
    desc = root / "dataset_description.json"
    if not desc.exists():
        _write_json(desc, {
            "Name": "rtcontrol real-time fMRI recordings",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "GeneratedBy": [{"Name": "rtcontrol", "Version": __version__,
                             "Description": "recorded live by the rtcontrol console"}],
        })
    readme = root / "README"
    if not readme.exists():
        readme.write_text(
            "Real-time fMRI runs recorded by the rtcontrol console.\n\n"
            "Each run's bold image holds the volumes as they arrived; events.tsv holds the feedback shown and the\n"
            "responses given. derivatives/rtcontrol holds motion and quality per volume, the per-volume pipeline\n"
            "timeline and a run log. No patient-identifying information is stored.\n",
            encoding="utf-8",
        )
    participants = root / "participants.tsv"
    pid = f"sub-{labels.subject}"
    lines = participants.read_text(encoding="utf-8").splitlines() if participants.exists() else ["participant_id"]
    if pid not in (line.split("\t")[0] for line in lines[1:]):
        lines.append(pid)
        atomic_write(participants, "\n".join(lines) + "\n")


def _write_derivative_description(root: Path) -> None:
    desc = root / "dataset_description.json"
    if not desc.exists():
        _write_json(desc, {
            "Name": "rtcontrol run derivatives: motion, quality and timelines",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "rtcontrol", "Version": __version__}],
        })


def _fmt_cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return "n/a"
        text = f"{float(value):.6f}".rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    text = str(value)
    return text.replace("\t", " ").replace("\n", " ") or "n/a"


def _write_tsv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    lines = ["\t".join(columns)] + ["\t".join(_fmt_cell(row.get(c)) for c in columns) for row in rows]
    atomic_write(path, "\n".join(lines) + "\n")


def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(_finite(data), indent=2) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --- reading back -----------------------------------------------------------------------------------


def bids_run_source(bids_dir: Path | str, sub: str, ses: str | None, task: str, run: int | str) -> Path:
    """The ``_bold.nii.gz`` of one run in a BIDS dataset, e.g. to replay it as a live scan."""
    bids_dir = Path(bids_dir)
    sub = str(sub).removeprefix("sub-")
    ses = str(ses).removeprefix("ses-") if ses else None
    task = str(task).removeprefix("task-")
    run_number = int(str(run).removeprefix("run-"))
    folder = bids_dir / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "func"
    stem = f"sub-{sub}" + (f"_ses-{ses}" if ses else "") + f"_task-{task}"
    for name in (f"{stem}_run-{run_number:02d}_bold.nii.gz", f"{stem}_run-{run_number}_bold.nii.gz",
                 f"{stem}_run-{run_number:02d}_bold.nii", f"{stem}_run-{run_number}_bold.nii"):
        if (folder / name).is_file():
            return folder / name
    have = sorted(p.name for p in folder.glob("*_bold.nii*")) if folder.is_dir() else []
    raise FileNotFoundError(
        f"{folder}: no bold run for sub-{sub} ses-{ses} task-{task} run-{run_number}; "
        + (f"found: {', '.join(have)}" if have else "the folder holds no bold runs")
    )
