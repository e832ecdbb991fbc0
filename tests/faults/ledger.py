"""The one ledger every fault scenario checks.

volumes sent by the scanner = processed once by the worker (its saved run, ``feedback.jsonl``) = feedback
delivered to the stimulus program, in order, with the right value; or the console names, in its output,
exactly the volumes whose feedback was lost (or held back as catch-up). The console never counts as
delivered more than the stimulus program received.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .stimulus import Received

#: Console lines that account for feedback the subject did not get.
_LOSS_WORDS = re.compile(r"lost|missing|not shown|not delivered|not confirmed|catch.?up|never|gave up|no feedback",
                         re.I)
_VOLUME_LIST = re.compile(r"volumes?\s+((?:\d+(?:\s*(?:-|–|\.\.|to)\s*\d+)?(?:\s*,\s*|\s+and\s+|\s+)?)+)", re.I)
_NUMBER_OR_RANGE = re.compile(r"(\d+)(?:\s*(?:-|–|\.\.|to)\s*(\d+))?")
_SUMMARY = re.compile(r"^run (\S+): (\d+) volumes, (\d+) feedback values, (\d+) delivered\b", re.M)


def worker_runs(data: Path, run: str) -> list[Path]:
    """The worker's saved runs of ``run`` (one per run start), oldest first."""
    return sorted(p for p in data.glob(f"*_{run}") if (p / "feedback.jsonl").is_file())


def worker_indices(run_dir: Path) -> list[int]:
    """Volume indices the worker's project produced feedback for, in the order it saved them."""
    out = []
    for line in (run_dir / "feedback.jsonl").read_text().splitlines():
        if line.strip():
            out.append(int(json.loads(line)["index"]))
    return out


def named_as_lost(console_text: str) -> set[int]:
    """Volume numbers the console names in clauses that say feedback was lost, missing or held back."""
    named: set[int] = set()
    clauses = (c for line in console_text.splitlines() for c in line.split(";"))  # "...; live again from 10"
    for clause in clauses:
        if not _LOSS_WORDS.search(clause):
            continue
        for m in _VOLUME_LIST.finditer(clause):
            for part in _NUMBER_OR_RANGE.finditer(m.group(1)):
                if part.group(2) is not None:
                    lo, hi = int(part.group(1)), int(part.group(2))
                    if 0 <= hi - lo < 100_000:
                        named.update(range(lo, hi + 1))
                else:
                    named.add(int(part.group(1)))
    return named


@dataclass
class Summary:
    run: str
    volumes: int
    feedbacks: int
    delivered: int


def summary(console_text: str) -> Summary:
    found = _SUMMARY.findall(console_text)
    assert found, "the console printed no run summary:\n" + console_text[-3000:]
    run, volumes, feedbacks, delivered = found[-1]
    return Summary(run, int(volumes), int(feedbacks), int(delivered))


@dataclass
class Ledger:
    sent: int
    received: list[int]
    worker: list[list[int]]
    console: Summary
    named: set[int]
    problems: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[int]:
        return [i for i in range(self.sent) if i not in set(self.received)]

    def report(self) -> str:
        return (f"sent {self.sent}; worker processed {self.worker}; stimulus received {self.received}; "
                f"console: {self.console}; named as lost {sorted(self.named)}")


def check(sent: int, received: list[Received], worker_dirs: list[Path], console_text: str, *,
          worker_restarted: bool = False) -> Ledger:
    """The ledger of one run; ``problems`` lists every way it does not balance."""
    got = [int(r.msg["index"]) for r in received]
    ledger = Ledger(sent, got, [worker_indices(d) for d in worker_dirs], summary(console_text),
                    named_as_lost(console_text))
    p = ledger.problems
    # processed once by the worker (a restarted worker rebuilds its state once more from the start)
    if not worker_dirs:
        p.append("the worker saved no run")
    if not worker_restarted and len(worker_dirs) > 1:
        p.append(f"the worker started the run {len(worker_dirs)} times")
    for n, indices in enumerate(ledger.worker):
        if indices != sorted(set(indices)):
            p.append(f"worker run {n}: volumes processed twice or out of order: {indices}")
    processed = set().union(*map(set, ledger.worker)) if ledger.worker else set()
    unprocessed = [i for i in range(sent) if i not in processed]
    if unprocessed and not set(unprocessed) <= ledger.named:
        p.append(f"volumes never processed by the worker and not named by the console: {unprocessed}")
    # delivered to the stimulus program once, in order, with its own value
    if got != sorted(set(got)):
        p.append(f"feedback reached the stimulus program twice or out of order: {got}")
    wrong = [(r.msg["index"], r.msg.get("value")) for r in received if r.msg.get("value") != float(r.msg["index"])]
    if wrong:
        p.append(f"feedback values that are not their volume's (index, value): {wrong}")
    if any(i >= sent for i in got):
        p.append(f"feedback for volumes never sent: {[i for i in got if i >= sent]}")
    unaccounted = [i for i in ledger.missing if i not in ledger.named]
    if unaccounted:
        p.append(f"feedback for volumes {unaccounted} never reached the stimulus program and the console "
                 "did not name them as lost")
    # the console's own count is true
    if ledger.console.delivered > len(set(got)):
        p.append(f"the console reports {ledger.console.delivered} delivered to the subject, but the stimulus "
                 f"program received {len(set(got))}")
    return ledger


def assert_balanced(ledger: Ledger, context: str = "") -> None:
    assert not ledger.problems, (context + "\n" if context else "") + "\n".join(ledger.problems) + \
        "\n" + ledger.report()
