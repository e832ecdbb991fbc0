"""Which TR a run uses when the run settings and the scanner's headers disagree.

The settings' TR is what the operator typed; the headers' TR is what the scanner did. On the first
volume they are compared; when they differ by more than :data:`TOLERANCE` the operator is told once,
naming the file, and the run uses one of them everywhere (the project's ``ctx.tr`` and ``volume.tr``,
the lateness checks and the recording): the scanner's by default, the settings' when
``[run] tr_source = "settings"`` says so (for a sequence whose headers give a wrong TR).
Pure: the controller calls it and says what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Seconds two TRs may differ by and still count as the same (headers give TR in ms, settings in s).
TOLERANCE = 0.005


@dataclass(frozen=True)
class TrChoice:
    tr: float  # the TR the run uses
    message: str | None  # what to tell the operator (None: they agree, or the headers give no TR)


def choose_tr(settings_tr: float, scanner_tr: float | None, source: str = "scanner", file: str = "") -> TrChoice:
    """The run's TR given the settings' and the first volume's (``file`` is where the headers came from)."""
    if scanner_tr is None or scanner_tr <= 0 or abs(scanner_tr - settings_tr) <= TOLERANCE:
        return TrChoice(settings_tr if scanner_tr is None or scanner_tr <= 0 else scanner_tr, None)
    tr = settings_tr if source == "settings" else scanner_tr
    where = f" (headers of {Path(file).name})" if file else ""
    why = ' ([run] tr_source = "settings")' if source == "settings" else ""
    return TrChoice(tr, f"settings TR {settings_tr:g} s differs from the scanner's {scanner_tr:g} s{where}; "
                        f"the project gets {tr:g} s{why}")
