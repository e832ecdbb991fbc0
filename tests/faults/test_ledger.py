"""The ledger itself: it must catch every way a run can fail to balance (a check that cannot fail is no check)."""

from __future__ import annotations

import json
from pathlib import Path

from .ledger import check, named_as_lost
from .stimulus import Received

RUN = "sub-01_ses-01_task-faults_run-01"


def _worker_run(tmp: Path, indices: list[int], stamp: str = "20260101T000000.000000Z") -> Path:
    d = tmp / f"{stamp}_{RUN}"
    d.mkdir()
    (d / "feedback.jsonl").write_text("".join(json.dumps({"run": RUN, "index": i, "feedback": float(i)}) + "\n"
                                              for i in indices))
    return d


def _got(indices: list[int], values: dict[int, float] | None = None) -> list[Received]:
    values = values or {}
    return [Received(float(n), {"type": "feedback", "run": RUN, "index": i, "value": values.get(i, float(i))})
            for n, i in enumerate(indices)]


def _console(delivered: int, extra: str = "", volumes: int = 10) -> str:
    return extra + (f"\nrun {RUN}: {volumes} volumes, {volumes} feedback values, "
                    f"{delivered} delivered to the subject; ended: x\n")


def test_a_balanced_run_has_no_problems(tmp_path: Path) -> None:
    assert check(10, _got(list(range(10))), [_worker_run(tmp_path, list(range(10)))], _console(10)).problems == []


def test_counting_as_delivered_what_the_program_never_got_is_caught(tmp_path: Path) -> None:
    """Issue 12 item 1: the console said 10 delivered, the stimulus program got nothing."""
    problems = check(10, [], [_worker_run(tmp_path, list(range(10)))], _console(10)).problems
    assert any("reports 10 delivered" in p and "received 0" in p for p in problems), problems
    assert any("did not name them as lost" in p for p in problems), problems


def test_twice_out_of_order_and_wrong_values_are_caught(tmp_path: Path) -> None:
    problems = check(4, _got([0, 2, 1, 2, 3], {3: 9.0}), [_worker_run(tmp_path, [0, 1, 1, 2, 3])], _console(4)).problems
    text = "\n".join(problems)
    assert "twice or out of order: [0, 2, 1, 2, 3]" in text
    assert "worker run 0: volumes processed twice" in text
    assert "(3, 9.0)" in text


def test_losses_the_console_names_balance_the_ledger(tmp_path: Path) -> None:
    text = _console(6, "[worker] warning: feedback for volumes 4-7 was catch-up, not shown to the subject")
    ledger = check(10, _got([0, 1, 2, 3, 8, 9]), [_worker_run(tmp_path, list(range(10)))], text)
    assert ledger.problems == []
    again = _worker_run(tmp_path, list(range(10)), stamp="20260101T000001.000000Z")
    unnamed = check(10, _got([0, 1, 2, 3, 8, 9]), [again], _console(6))
    assert any("[4, 5, 6, 7]" in p for p in unnamed.problems), unnamed.problems


def test_named_volumes_are_read_from_lists_and_ranges() -> None:
    assert named_as_lost("error: volumes 3, 4 and 7 were lost") == {3, 4, 7}
    assert named_as_lost("feedback for volumes 10 to 12 not shown (catch-up)") == {10, 11, 12}
    assert named_as_lost("volume 5 is missing") == {5}
    assert named_as_lost("restarted; volumes 6-9 arrived during the catch-up (not shown); live again from volume 10"
                         ) == {6, 7, 8, 9}
    assert named_as_lost("feedback: 14 of 16 feedback values reached a stimulus program; 2 not confirmed by the "
                         "subject agent as taken by a stimulus program (volumes 14, 15)") == {14, 15}
    assert named_as_lost("volume 5  feedback 5.0  12 ms file→feedback") == set()  # a progress line names nothing
