"""A run's end-of-run summary: what arrived, what was missing, what reached the subject, how fast and how
still; kept beside the recording as ``summary.json`` (and ``summary.png``, drawn by the console).

Pure: :func:`summarize` takes the run's per-volume facts (which volumes arrived, each volume's timeline,
the feedback values, FD, the subject agent's word per value) and returns a :class:`RunSummary`; the
console builds them from its live model (``rtcontrol.console.summary``), :func:`from_journal` from a
run's journal (an interrupted run finished later). Only what was verified is counted: a delivery the
subject agent did not confirm is "unconfirmed", and a number the record does not hold is ``None``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rtcontrol.files import atomic_write
from rtcontrol.scanner.volume import STAGES

SUMMARY_JSON = "summary.json"
SUMMARY_PNG = "summary.png"
FORMAT = 1

#: Latency spans of the per-volume timeline: name -> (from stage, to stage), in pipeline order.
SPANS: dict[str, tuple[str, str]] = {
    "watch": ("file_seen", "file_complete"),  # waiting for the file to be written whole
    "ingest": ("file_complete", "parsed"),  # read and assembled into a volume
    "queue": ("parsed", "sent"),  # waiting to go on the worker link
    "wire": ("sent", "worker_received"),
    "project": ("worker_received", "result_ready"),  # the experiment's analysis
    "back": ("result_ready", "feedback_received"),
    "subject": ("feedback_received", "subject_delivered"),
    "consumer": ("subject_delivered", "consumer_taken"),  # the stimulus program took it
    "file_to_feedback": ("file_seen", "feedback_received"),
    "file_to_subject": ("file_seen", "subject_delivered"),
}
#: What the subject agent says became of a value (see ``rtcontrol.console.events.Delivered``).
OUTCOMES = ("delivered", "no_consumer", "dropped", "cancelled", "unconfirmed")
MOTION = ("tx", "ty", "tz", "rx", "ry", "rz")


@dataclass
class RunSummary:
    run: str
    reason: str
    tr: float
    expected_volumes: int  # 0: not set
    received: int
    missing: list[int]  # indices never received, from 0 to the last expected (or received) one
    last_index: int
    feedback_values: int  # live feedback values passed on to the subject agent
    feedback_computed: int  # live feedback results (with or without a value)
    catch_up: list[int]  # volumes whose only feedback was catch-up after a worker restart (recorded, never shown)
    outcomes: dict[str, list[int]] | None  # outcome -> volumes; None: no subject agent / not recorded
    latency_ms: dict[str, dict[str, float | int]]  # span -> {median, p99, n}
    fd_threshold: float
    fd_max: float | None
    fd_over: list[int]
    scanner_late: int | None
    analysis_late: int | None
    restarts: list[str] = field(default_factory=list)
    source: str = "live"  # "live" or "journal" (an interrupted run finished later)
    written: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    #: per-volume curves for the PNG (not saved in the JSON): feedback, fd, signal, roi, motion (n x 6)
    curves: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def delivered(self) -> int:
        return len((self.outcomes or {}).get("delivered", []))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("curves")
        data = {"format": FORMAT, **data, "delivered": self.delivered}
        return data

    def text(self, restarts: bool = True) -> list[str]:
        """The summary as terminal lines (``run --no-gui``) and the window's summary view; ``restarts=False``
        leaves out the worker-restart statements (said already, just above)."""
        expected = f" of {self.expected_volumes} expected" if self.expected_volumes else ""
        lines = [f"volumes: {self.received} received{expected}; "
                 + (f"MISSING {len(self.missing)}: volume{'s' if len(self.missing) > 1 else ''} {spans(self.missing)}"
                    if self.missing else "none missing")]
        fb = f"feedback: {self.feedback_values} value(s) for the subject from {self.feedback_computed} result(s)"
        if self.outcomes is None:
            fb += "; no subject agent: none delivered"
        else:
            fb += "; " + ", ".join(f"{len(v)} {k.replace('_', ' ')}" + (f" ({spans(v)})" if k != "delivered" else "")
                                   for k, v in self.outcomes.items() if v or k == "delivered")
        if self.catch_up:
            fb += (f"; catch-up after a worker restart (recorded, not shown): {len(self.catch_up)} "
                   f"({spans(self.catch_up)})")
        lines.append(fb)
        lines += [f"worker restart: {r}" for r in self.restarts] if restarts else []
        lat = [f"{k} {_ms(v['median'])}/{_ms(v['p99'])}" for k, v in self.latency_ms.items() if v["n"]]
        lines.append("latency ms (median/p99): " + (", ".join(lat) if lat else "none measured"))
        if self.fd_max is None:
            lines.append(f"motion: no FD from the project (threshold {self.fd_threshold:g} mm)")
        else:
            over = f" ({spans(self.fd_over)})" if self.fd_over else ""
            lines.append(f"motion: max FD {self.fd_max:.2f} mm; {len(self.fd_over)} volume(s) over "
                         f"{self.fd_threshold:g} mm{over}")
        late = (f"scanner late {self.scanner_late}, analysis late {self.analysis_late}"
                if self.scanner_late is not None else "not recorded")
        lines.append(f"late: {late}")
        return lines


def summarize(
    *,
    run: str,
    reason: str,
    tr: float,
    expected_volumes: int,
    fd_threshold: float,
    received: Iterable[int],
    timelines: Mapping[int, Mapping[str, float]],
    feedback: Mapping[int, Any],
    computed: int | None = None,
    metrics: Mapping[str, Mapping[int, float]],
    outcomes: Mapping[int, str] | None,
    catch_up: Iterable[int] = (),
    restarts: Iterable[str] = (),
    scanner_late: int | None = None,
    analysis_late: int | None = None,
    signal: Mapping[int, float] | None = None,
    source: str = "live",
) -> RunSummary:
    """The summary of one run from its per-volume facts (see the module's doc).

    ``feedback``: live feedback results by volume (value ``None``: the project gave none for it), of
    ``computed`` results in all (default: as many as ``feedback`` holds);
    ``metrics``: name -> {volume: value} (``fd``, motion, an ROI mean); ``outcomes``: the subject agent's
    word per value (None when there was no subject agent)."""
    got = sorted({int(i) for i in received})
    last = max([*got, expected_volumes - 1]) if got or expected_volumes else -1
    missing = sorted(set(range(last + 1)) - set(got))
    valued = sorted(i for i, v in feedback.items() if v is not None)
    by_outcome: dict[str, list[int]] | None = None
    if outcomes is not None:
        by_outcome = {k: [] for k in OUTCOMES}
        for i in valued:
            word = outcomes.get(i, "")
            by_outcome[word if word in OUTCOMES else "unconfirmed"].append(i)
    n = last + 1
    fd = _series(metrics.get("fd", {}), n)
    finite = np.isfinite(fd)
    curves = {
        "feedback": _series({i: feedback_number(v) for i, v in feedback.items()}, n),
        "fd": fd,
        "signal": _series(signal or {}, n),
        "roi": _series(next((metrics[k] for k in ("roi_mean", "roi", "roi_psc", "psc") if k in metrics), {}), n),
        "motion": np.stack([_series(metrics.get(k, {}), n) for k in MOTION], axis=1) if n else np.empty((0, 6)),
    }
    return RunSummary(
        run=run, reason=reason, tr=float(tr), expected_volumes=int(expected_volumes or 0), received=len(got),
        missing=missing, last_index=last, feedback_values=len(valued),
        feedback_computed=len(feedback) if computed is None else int(computed),
        catch_up=sorted({int(i) for i in catch_up}), outcomes=by_outcome, latency_ms=latency(timelines),
        fd_threshold=float(fd_threshold), fd_max=float(fd[finite].max()) if finite.any() else None,
        fd_over=[int(i) for i in np.flatnonzero(finite & (np.nan_to_num(fd) > fd_threshold))],
        scanner_late=scanner_late, analysis_late=analysis_late, restarts=list(restarts), source=source,
        curves=curves,
    )


def latency(timelines: Mapping[int, Mapping[str, float]]) -> dict[str, dict[str, float | int]]:
    """Median and 99th percentile (ms) of each span over the volumes whose timeline holds both ends."""
    out: dict[str, dict[str, float | int]] = {}
    for name, (a, b) in SPANS.items():
        d = np.array([(t[b] - t[a]) * 1e3 for t in timelines.values() if a in t and b in t], dtype=float)
        d = d[np.isfinite(d)]
        out[name] = ({"median": round(float(np.median(d)), 2), "p99": round(float(np.percentile(d, 99)), 2),
                      "n": int(d.size)} if d.size else {"median": math.nan, "p99": math.nan, "n": 0})
    return out


def write(summary: RunSummary, run_dir: Path | str) -> Path:
    """``summary.json`` in the run folder, written whole or not at all; returns its path."""
    path = Path(run_dir) / SUMMARY_JSON
    text = json.dumps(_json_safe(summary.to_dict()), indent=2)
    atomic_write(path, text + "\n")
    return path


def from_journal(run_dir: Path | str, fd_threshold: float = 0.5) -> RunSummary:
    """The summary of a recorded run from its journal (an interrupted run, finished later). What the journal
    does not hold (the subject agent's word on each value, the late counts) is left unknown (None)."""
    from rtcontrol.recording.journal import read_journal
    from rtcontrol.recording.results import run_results
    from rtcontrol.recording.runinfo import load_run_info

    contents = read_journal(run_dir)
    run_settings = (load_run_info(run_dir).get("settings") or {})
    r = run_settings.get("run") or {}
    fd_threshold = float((run_settings.get("display") or {}).get("fd_threshold", fd_threshold))
    timelines: dict[int, dict[str, float]] = {}
    received = [int(r["index"]) for r in contents.volumes()]  # those whose voxels are all on disk
    results = run_results(contents)  # one result per volume: live, or else catch-up
    live = [r for r in results.by_index.values() if r.source == "live"]
    feedback: dict[int, Any] = {r.index: r.feedback for r in live}
    metrics: dict[str, dict[int, float]] = {}
    for res in live:
        for name, v in res.metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                metrics.setdefault(name, {})[res.index] = float(v)
    restarts: list[str] = []
    run = next((str(r.get("run")) for r in contents.of_type("volume") if r.get("run")), "")
    reason = "interrupted (finished from its journal)"
    for rec in contents.records:
        kind, index = rec.get("type"), rec.get("index", -1)
        if kind in ("volume", "feedback", "timeline"):
            timelines.setdefault(int(index), {}).update(rec.get("timeline") or {})
        elif kind == "event":
            if rec.get("kind") == "worker_restarted":
                restarts.append(str(rec.get("message")))
            elif rec.get("kind") == "run_end":
                reason = str(rec.get("message"))
    return summarize(
        run=run or Path(run_dir).name, reason=reason, tr=float(r.get("tr") or 0.0),
        expected_volumes=int(r.get("expected_volumes") or 0), fd_threshold=fd_threshold, received=received,
        timelines=timelines, feedback=feedback, metrics=metrics, outcomes=None,
        catch_up=set(results.indices("catch_up")),  # recomputed after a restart and never passed on live
        restarts=restarts, source="journal",
    )


def spans(indices: Iterable[int], through: str = "-") -> str:
    """``[1, 2, 5, 6, 7, 8, 10]`` as ``"1, 2, 5-8, 10"`` (sorted, each index once): runs of three or more are
    joined by ``through``, so a long loss stays one short line."""
    runs: list[list[int]] = []
    for i in sorted(set(indices)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}, {b}" if b == a + 1 else f"{a}{through}{b}" for a, b in runs)


def _series(values: Mapping[int, float | None], n: int) -> np.ndarray:
    out = np.full(n, np.nan)
    for i, v in values.items():
        if 0 <= int(i) < n and v is not None:
            out[int(i)] = float(v)
    return out


def feedback_number(value: Any) -> float | None:
    """The number to plot for a feedback value: itself, or a dict's ``value``/first number."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        if isinstance(value.get("value"), (int, float)):
            return float(value["value"])
        for v in value.values():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
    return None


def _ms(v: float) -> str:
    return "—" if math.isnan(v) else f"{v:.1f}"


def _json_safe(value: Any) -> Any:
    """NaN is not JSON: a latency never measured is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


assert set(s for pair in SPANS.values() for s in pair) <= set(STAGES)
