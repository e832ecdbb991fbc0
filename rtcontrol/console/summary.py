"""The end-of-run summary of the console's run: its live model turned into a
:class:`rtcontrol.recording.summary.RunSummary` (the pure summary, also built from a journal), and saved
beside the recording as ``summary.json``.

The controller calls :func:`run_summary` once the run has ended (every volume handed on, the last feedback
back, the subject agent's final word on each value); the headless runner prints it, the window shows it,
and both draw ``summary.png`` from it (``rtcontrol.gui.summary_plot``).
"""

from __future__ import annotations

import math
from typing import Any

from rtcontrol.console.diagnostics import Diagnostics
from rtcontrol.console.model import MOTION, RunModel
from rtcontrol.console.resume import CatchUp
from rtcontrol.console.settings import RunSettings
from rtcontrol.recording.summary import RunSummary, summarize, write
from rtcontrol.scanner.volume import STAGES


def run_summary(model: RunModel, settings: RunSettings, reason: str, diagnostics: Diagnostics, catch_up: CatchUp,
                *, subject: bool) -> RunSummary:
    """The summary of the run in ``model`` (see the module's doc); ``subject``: a subject agent was linked."""
    parsed = STAGES.index("parsed")
    received = [i for i in range(model.stamps.length) if not math.isnan(model.stamps.get(i, parsed))]
    timelines = {i: model.timeline(i).to_dict() for i in range(model.stamps.length)}
    # the values passed on to the subject agent: their number where they have one (for the plot)
    feedback: dict[int, Any] = {i: "value" if math.isnan(model.feedback.get(i)) else model.feedback.get(i)
                                for i in model.valued}
    metrics: dict[str, dict[int, float]] = {
        name: _by_index(series.values()) for name, series in model.metrics.items()
    }
    for column, name in enumerate(MOTION):
        metrics[name] = _by_index(model.motion.values(column))
    return summarize(
        run=model.run, reason=reason, tr=settings.run.tr, expected_volumes=settings.run.expected_volumes,
        fd_threshold=settings.display.fd_threshold, received=received, timelines=timelines, feedback=feedback,
        computed=model.feedbacks,
        metrics=metrics, outcomes=dict(model.outcomes) if subject else None,
        catch_up=catch_up.answered - catch_up.shown, restarts=catch_up.reports,
        scanner_late=diagnostics.scanner_late_count, analysis_late=diagnostics.analysis_late_count,
        signal=_by_index(model.global_mean.values()),
    )


def _by_index(values: Any) -> dict[int, float]:
    return {i: float(v) for i, v in enumerate(values) if not math.isnan(v)}


def save_summary(controller: Any, reason: str) -> RunSummary | None:
    """At the end of the controller's run: its summary, written as ``summary.json`` into the run folder (if the
    run was recorded). A failure is reported and loses nothing else; returns None only if it cannot be built."""
    c = controller
    try:
        summary = run_summary(c.model, c.settings, reason, c._diag, c._catch_up, subject=c.subject is not None)
    except Exception as exc:  # a bug here must not spoil the end of a run
        c.error(f"the run's summary could not be made: {exc!r}", "recording")
        return None
    if c.run_dir is not None and c.run_dir.is_dir():
        try:
            path = write(summary, c.run_dir)
            c.info(f"run summary saved: {path}", "recording")
        except OSError as exc:
            c.error(f"the run's summary could not be saved in {c.run_dir}: {exc}", "recording")
    return summary
