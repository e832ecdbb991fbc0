"""Timecourse plumbing that needs no window: peak-preserving decimation, percent change, stable ranges."""

from __future__ import annotations

import numpy as np

from rtcontrol.gui.timecourse_panel import Ranges, decimate, percent_change


def test_decimate_keeps_peaks_and_length_bounded() -> None:
    y = np.zeros(10_000)
    y[4321] = 5.0
    y[777] = -3.0
    y[100:200] = np.nan
    x = np.arange(y.size, dtype=float)
    dx, dy = decimate(x, y, max_points=1000)
    assert dy.size <= 1000 + 20
    assert np.nanmax(dy) == 5.0 and np.nanmin(dy) == -3.0
    assert np.all(np.diff(dx) >= 0)
    short = np.arange(10.0)
    assert decimate(short, short)[1] is short


def test_percent_change_from_the_first_values() -> None:
    y = np.array([np.nan, 100.0, 100.0, 102.0])
    pc = percent_change(y, baseline=2)
    assert np.isnan(pc[0]) and pc[3] == 2.0


def test_ranges_move_only_when_data_leaves_them() -> None:
    r = Ranges()
    first = r.y_range("a", [np.array([0.0, 1.0])])
    assert first is not None and first[0] < 0 < 1 < first[1]
    assert r.y_range("a", [np.array([0.0, 1.1])]) is None
    assert r.y_range("a", [np.array([0.0, 5.0])]) is not None
    assert r.x_max(10, 0) == 50 and r.x_max(20, 0) == -1 and r.x_max(50, 0) == 100
    assert Ranges().x_max(3, 300) == 300
