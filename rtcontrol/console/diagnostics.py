""""Scanner late" and "analysis late", as OpenNFT reports them.

* scanner late: no new volume for noticeably longer than TR (the export stalled, the scan
  paused or ended, or the watch folder is wrong);
* analysis late: a volume's feedback took longer than one TR from file to result, so
  feedback falls behind the scan; when most of that time went into the file being written or copied,
  it is reported as scanner late instead (the export was slow, not the analysis).

Pure bookkeeping on monotonic times; the controller feeds it and publishes what it returns.
"""

from __future__ import annotations

from rtcontrol.console.events import Lateness
from rtcontrol.scanner.volume import Timeline

#: A volume is "late" once this many TRs passed since the previous one.
SCANNER_FACTOR = 1.5


class Diagnostics:
    def __init__(self, tr: float, scanner_factor: float = SCANNER_FACTOR) -> None:
        self.tr = tr
        self.scanner_factor = scanner_factor
        self.last_arrival: float | None = None
        self._scanner_warned = False
        self.scanner_late_count = 0
        self.analysis_late_count = 0

    def volume_arrived(self, now: float) -> None:
        self.last_arrival = now
        self._scanner_warned = False

    def since_last(self, now: float) -> float | None:
        return None if self.last_arrival is None else now - self.last_arrival

    def check_scanner(self, now: float) -> Lateness | None:
        """Once per stall: a warning when the gap since the last volume exceeds the threshold."""
        gap = self.since_last(now)
        if gap is None or self._scanner_warned or gap <= self.scanner_factor * self.tr:
            return None
        self._scanner_warned = True
        self.scanner_late_count += 1
        return Lateness(
            "scanner",
            gap,
            message=f"scanner late: no new volume for {gap:.1f} s (TR is {self.tr:g} s)",
        )

    def check_analysis(self, index: int, timeline: Timeline) -> Lateness | None:
        """A warning when a volume's file-to-feedback time exceeded one TR, blaming the stage that took
        longest (the per-volume timeline holds them): a file slow to be written or copied is the scanner's
        export, not the analysis (reported as "scanner late")."""
        took = timeline.between("file_seen", "feedback_received")
        if took is None:
            took = timeline.between("parsed", "feedback_received")
        if took is None or took <= self.tr:
            return None
        stage, spent = _slowest(timeline)
        if stage == "file":
            self.scanner_late_count += 1
            return Lateness(
                "scanner",
                took,
                index=index,
                message=f"scanner late: volume {index}'s file took {spent:.2f} s to be written or copied into the "
                f"watch folder ({took:.2f} s from file to feedback, TR is {self.tr:g} s); the analysis was not slow",
            )
        self.analysis_late_count += 1
        where = {"analysis": "", "read": "; most of it reading the file", "link": "; most of it on the link to "
                 "or from the worker"}.get(stage, "")  # fmt: skip
        return Lateness(
            "analysis",
            took,
            index=index,
            message=f"analysis late: volume {index} took {took:.2f} s from file to feedback "
                    f"(TR is {self.tr:g} s){where}",
        )


#: Timeline stage spans and whom they blame.
_SPANS = (
    ("file", "file_seen", "file_complete"),
    ("read", "file_complete", "parsed"),
    ("link", "parsed", "worker_received"),
    ("analysis", "worker_received", "result_ready"),
    ("link", "result_ready", "feedback_received"),
)


def _slowest(timeline: Timeline) -> tuple[str, float]:
    """The stage that took longest, and how long (s); ('analysis', 0) when the timeline does not say."""
    spent: dict[str, float] = {}
    for stage, first, last in _SPANS:
        d = timeline.between(first, last)
        if d is not None:
            spent[stage] = spent.get(stage, 0.0) + max(d, 0.0)
    if not spent:
        return "analysis", 0.0
    stage = max(spent, key=lambda k: spent[k])
    return stage, spent[stage]
