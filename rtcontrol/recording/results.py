"""The one result that stands for each volume of a recorded run: the live feedback, or else the catch-up.

A run's journal holds the project's results in two kinds of record:

- ``feedback``: live feedback, passed on to the subject agent as it came;
- ``event`` of kind ``catch_up_feedback``: a result a restarted worker computed again while it rebuilt the
  project's state (:mod:`rtcontrol.console.resume`), recorded but never shown to the subject.

A volume that arrived while the worker was down or catching up has only a catch-up result; its metrics
(motion, quality) are as real as any other's, so the BIDS export keeps them and says where they came from.
Where both kinds exist the live one stands (it is the one the subject saw). Repeats are counted, not
written twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from rtcontrol.recording.journal import JournalContents

CATCH_UP_KIND = "catch_up_feedback"

Source = Literal["live", "catch_up"]


@dataclass
class Result:
    """What the project returned for one volume, and whether the subject was shown it (``live``)."""

    index: int
    feedback: Any
    metrics: dict[str, Any]
    timeline: dict[str, float]
    source: Source
    record: dict[str, Any]  # the journal record it came from


@dataclass
class RunResults:
    by_index: dict[int, Result] = field(default_factory=dict)
    live: list[dict[str, Any]] = field(default_factory=list)  # live feedback records, one per volume, journal order
    repeated_live: list[int] = field(default_factory=list)  # volumes with more than one live record (first kept)
    repeated_catch_up: list[int] = field(default_factory=list)  # catch-up more than once (restarted again; last kept)
    catch_up_and_live: list[int] = field(default_factory=list)  # catch-up computed for a volume shown live

    def indices(self, source: Source) -> list[int]:
        return sorted(i for i, r in self.by_index.items() if r.source == source)


def run_results(contents: JournalContents) -> RunResults:
    """Every volume's standing result from a run's journal (see the module docstring for the rule)."""
    out = RunResults()
    live: dict[int, dict[str, Any]] = {}
    catch_up: dict[int, dict[str, Any]] = {}
    for r in contents.records:
        if r.get("type") == "feedback" and "index" in r:
            index = int(r["index"])
            if index in live:
                out.repeated_live.append(index)
                continue
            live[index] = r
            out.live.append(r)
        elif r.get("type") == "event" and r.get("kind") == CATCH_UP_KIND:
            data = r.get("data") or {}
            if "index" not in data:
                continue
            index = int(data["index"])
            if index in catch_up:
                out.repeated_catch_up.append(index)
            catch_up[index] = data  # a later restart's result is the one the run went on from
    for index, r in live.items():
        out.by_index[index] = Result(index, r.get("feedback"), dict(r.get("metrics") or {}),
                                     _stamps(r.get("timeline")), "live", r)
    for index, data in catch_up.items():
        if index in live:
            out.catch_up_and_live.append(index)
            continue
        out.by_index[index] = Result(index, data.get("feedback"), dict(data.get("metrics") or {}),
                                     _stamps(data.get("timeline")), "catch_up", data)
    out.repeated_live.sort()
    out.repeated_catch_up.sort()
    out.catch_up_and_live.sort()
    return out


def _stamps(timeline: Any) -> dict[str, float]:
    if not isinstance(timeline, dict):
        return {}
    return {str(k): float(v) for k, v in timeline.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
