""""Scanner late" and "analysis late", as OpenNFT reports them.

* scanner late: no new volume for noticeably longer than TR (the export stalled, the scan
  paused or ended, or the watch folder is wrong);
* analysis late: a volume's feedback took longer than one TR from file to result, so
  feedback falls behind the scan.

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
        """A warning when a volume's file-to-feedback time exceeded one TR."""
        took = timeline.between("file_seen", "feedback_received")
        if took is None:
            took = timeline.between("parsed", "feedback_received")
        if took is None or took <= self.tr:
            return None
        self.analysis_late_count += 1
        return Lateness(
            "analysis",
            took,
            index=index,
            message=f"analysis late: volume {index} took {took:.2f} s from file to feedback (TR is {self.tr:g} s)",
        )
