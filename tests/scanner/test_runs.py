"""Run bookkeeping: run names, acquisition order, gaps, late and duplicate volumes."""

from __future__ import annotations

import numpy as np

from rtcontrol.scanner.runs import RunTracker
from rtcontrol.scanner.volume import Volume


def vol(index: int, uid: str = "1.2.3", number: int | None = 7, description: str = "bold") -> Volume:
    header = {"SeriesDescription": description}
    if number is not None:
        header["SeriesNumber"] = number
    return Volume(np.zeros((2, 2, 2), np.int16), np.eye(4), run="7_bold", index=index, header=header, series_uid=uid)


def test_in_order_volumes_pass_straight_through():
    tr = RunTracker()
    out = tr.add(vol(0), now=0.0)
    assert [v.index for v in out.volumes] == [0]
    assert [(n.kind, n.run) for n in out.notes] == [("new_run", "series-007")]
    assert out.volumes[0].run == "series-007"
    assert [v.index for v in tr.add(vol(1), now=1.0).volumes] == [1]
    assert tr.next_deadline() is None


def test_early_volume_waits_for_the_missing_one():
    tr = RunTracker(gap_timeout=2.0)
    tr.add(vol(0), 0.0)
    assert tr.add(vol(2), 0.1).volumes == []
    assert tr.add(vol(3), 0.2).volumes == []
    assert tr.next_deadline() == 2.1
    assert tr.expire(1.0).volumes == []  # not yet
    out = tr.add(vol(1), 1.5)
    assert [v.index for v in out.volumes] == [1, 2, 3] and out.notes == []
    assert tr.next_deadline() is None


def test_gap_is_reported_after_the_timeout_and_a_late_volume_still_passes():
    tr = RunTracker(gap_timeout=2.0)
    tr.add(vol(0), 0.0)
    tr.add(vol(3), 0.5)
    out = tr.expire(2.5)
    assert [v.index for v in out.volumes] == [3]
    assert out.notes[0].kind == "gap" and "volumes 1-2" in out.notes[0].message and out.notes[0].index == 1
    late = tr.add(vol(2), 3.0)
    assert [v.index for v in late.volumes] == [2] and late.notes[0].kind == "late"
    assert [v.index for v in tr.add(vol(4), 3.1).volumes] == [4]


def test_duplicates_are_dropped_with_a_note():
    tr = RunTracker()
    tr.add(vol(0), 0.0)
    tr.add(vol(2), 0.1)  # held
    for index in (0, 2):
        out = tr.add(vol(index), 0.2)
        assert out.volumes == [] and out.notes[0].kind == "duplicate" and out.notes[0].index == index


def test_series_make_runs_named_after_their_numbers():
    tr = RunTracker()
    a = tr.add(vol(0, uid="a", number=7), 0).notes[0]
    b = tr.add(vol(0, uid="b", number=9), 0).notes[0]
    c = tr.add(vol(0, uid="c", number=7), 0).notes[0]  # same number, other series
    d = tr.add(vol(0, uid="d", number=None, description="EPI rest"), 0).notes[0]
    assert [n.run for n in (a, b, c)] == ["series-007", "series-009", "series-007-2"]
    assert d.run == "7-bold"  # the reader's run name when there is no series number


def test_flush_releases_everything_and_ends_runs():
    tr = RunTracker(gap_timeout=100.0)
    tr.add(vol(0), 0.0)
    tr.add(vol(2), 0.1)
    tr.add(vol(5), 0.2)
    out = tr.flush(0.3)
    assert [v.index for v in out.volumes] == [2, 5]
    kinds = [n.kind for n in out.notes]
    assert kinds == ["gap", "gap", "run_end"]
    assert "3 volumes received" in out.notes[-1].message


def test_gap_wait_follows_the_tr_and_the_end_names_every_missing_index():
    """At TR 1 s a missing volume holds the next ones back about one TR, not the 2 s gap timeout; the
    end-of-run note names each index that never came (a late one is not missing)."""
    tr = RunTracker(gap_timeout=2.0)

    def v(i: int) -> Volume:
        out = vol(i)
        out.tr = 1.0
        return out

    tr.add(v(0), 0.0)
    assert tr.add(v(2), 0.1).volumes == []
    assert tr.next_deadline() == 1.1
    out = tr.expire(1.1)
    assert [x.index for x in out.volumes] == [2] and "volume 1 did not arrive within 1 s" in out.notes[0].message
    tr.add(v(5), 2.0)
    out = tr.expire(3.0)
    assert [x.index for x in out.volumes] == [5] and "volumes 3-4" in out.notes[0].message
    assert tr.add(v(4), 3.5).notes[0].kind == "late"
    (end,) = tr.flush(4.0).notes
    assert end.kind == "run_end" and end.message.endswith("missing: volumes 1, 3")


def test_volume_with_another_matrix_is_refused_and_its_index_stays_open():
    tr = RunTracker()
    tr.add(vol(0), 0.0)
    odd = Volume(np.zeros((3, 2, 2), np.int16), np.eye(4), index=1, header={"SeriesNumber": 7}, series_uid="1.2.3")
    out = tr.add(odd, 0.1, "/scan/IM_0002.dcm")
    assert out.volumes == [] and [n.kind for n in out.notes] == ["refused"]
    assert "IM_0002.dcm" in out.notes[0].message and "3x2x2" in out.notes[0].message and "2x2x2" in out.notes[0].message
    moved = Volume(np.zeros((2, 2, 2), np.int16), np.diag([2.0, 1, 1, 1]), index=1, header={"SeriesNumber": 7},
                   series_uid="1.2.3")
    assert [n.kind for n in tr.add(moved, 0.2).notes] == ["refused"]
    assert [x.index for x in tr.add(vol(1), 0.3).volumes] == [1]  # the right volume 1 still takes its place
