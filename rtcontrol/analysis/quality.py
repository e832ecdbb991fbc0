"""Per-volume quality metrics for the console's plots: FD, DVARS, running tSNR, spikes.

Each metric keeps O(1) state per voxel (or a fixed-length history), so its cost per volume does
not grow with the run. Names of the reported metrics: ``fd`` (mm, Power et al. 2012, from the
motion parameters of :mod:`rtcontrol.rigid`), ``dvars`` (RMS of the volume-to-volume change
inside the head, in percent of the mean head signal, so it compares across scanners),
``tsnr_median`` (median over the head of mean / SD so far, Welford's algorithm), ``spike``
(1 when DVARS or a slice mean jumps more than ``spike_z`` robust z-scores (median and MAD of
the last 50 volumes; from the 11th volume on) above its recent history, else 0) and
``spike_z`` (the largest of those z-scores; for slices, less ``sqrt(2 ln n_slices)``, the
typical largest of that many noise z-scores).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from rtcontrol.rigid import framewise_displacement

MAD_TO_SD = 1.4826


def head_mask(data: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Voxels brighter than ``fraction`` of the 99th percentile: the head in an EPI volume."""
    data = np.asarray(data)
    hi = float(np.percentile(data, 99))
    if not hi > 0:
        raise ValueError("the volume has no signal (99th percentile <= 0): cannot find the head")
    return data > fraction * hi


class RunningTsnr:
    """Welford's running mean and variance per voxel; ``tsnr()`` is mean / SD."""

    def __init__(self, n_voxels: int) -> None:
        self.n = 0
        self.mean = np.zeros(n_voxels)
        self.m2 = np.zeros(n_voxels)

    def update(self, values: np.ndarray) -> None:
        x = np.asarray(values, dtype=np.float64)
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    def tsnr(self) -> np.ndarray:
        if self.n < 2:
            return np.full(self.mean.shape, np.nan)
        sd = np.sqrt(self.m2 / (self.n - 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            out = self.mean / sd
        out[~np.isfinite(out)] = np.nan
        return out


class RobustZ:
    """z-score of a new value against the median and MAD of the last ``window`` values."""

    def __init__(self, window: int = 50, min_history: int = 10) -> None:
        self.history: deque[np.ndarray] = deque(maxlen=window)
        self.min_history = min_history

    def update(self, value: np.ndarray | float) -> np.ndarray:
        """z of ``value`` against the history (0 until there is enough), then remember it."""
        v = np.atleast_1d(np.asarray(value, dtype=np.float64))
        if len(self.history) >= self.min_history:
            h = np.stack(self.history)
            med = np.median(h, axis=0)
            mad = np.median(np.abs(h - med), axis=0) * MAD_TO_SD
            floor = np.maximum(np.abs(med) * 1e-3, 1e-9)
            z = (v - med) / np.maximum(mad, floor)
        else:
            z = np.zeros_like(v)
        self.history.append(v)
        return z


class QualityMonitor:
    """All the per-volume quality metrics of one run. Feed volumes in acquisition order.

    The head mask comes from the first volume. Pass the motion parameters of each volume
    (after motion correction) to get ``fd``; pass the corrected data for tSNR and DVARS.
    """

    def __init__(self, spike_z: float = 5.0, window: int = 50) -> None:
        self.spike_z = float(spike_z)
        self._mask: np.ndarray | None = None
        self._prev: np.ndarray | None = None
        self._prev_params: np.ndarray | None = None
        self._tsnr: RunningTsnr | None = None
        self._dvars_z = RobustZ(window)
        self._slice_z = RobustZ(window)
        self._prev_slices: np.ndarray | None = None

    @property
    def mask(self) -> np.ndarray | None:
        return self._mask

    def update(self, data: np.ndarray, params: np.ndarray | None = None) -> dict[str, float]:
        data = np.asarray(data, dtype=np.float32)
        if self._mask is None:
            self._mask = head_mask(data)
            self._tsnr = RunningTsnr(int(self._mask.sum()))
        elif data.shape != self._mask.shape:
            raise ValueError(f"volume shape {data.shape} differs from the run's {self._mask.shape}")
        inside = data[self._mask]
        metrics: dict[str, float] = {"mean_signal": float(inside.mean())}
        if params is not None:
            p = np.asarray(params, dtype=np.float64)
            metrics["fd"] = 0.0 if self._prev_params is None else framewise_displacement(self._prev_params, p)
            self._prev_params = p
        assert self._tsnr is not None
        self._tsnr.update(inside)
        metrics["tsnr_median"] = float(np.nanmedian(self._tsnr.tsnr())) if self._tsnr.n >= 2 else float("nan")
        slices = _slice_means(data, self._mask)
        if self._prev is None:
            metrics["dvars"] = 0.0
            z_max = 0.0
        else:
            diff = inside - self._prev
            metrics["dvars"] = float(np.sqrt(np.mean(diff * diff)) / max(abs(metrics["mean_signal"]), 1e-9) * 100.0)
            z_dvars = float(self._dvars_z.update(metrics["dvars"])[0])
            z_slices = np.abs(self._slice_z.update(slices - self._prev_slices))
            # the largest of K noise z-scores grows like sqrt(2 ln K): discount it, so a run with
            # many slices does not raise more false alarms than one with few
            excess = float(np.nanmax(z_slices)) - np.sqrt(2.0 * np.log(max(z_slices.size, 2)))
            z_max = max(z_dvars, excess)
        self._prev = inside
        self._prev_slices = slices
        metrics["spike_z"] = z_max
        metrics["spike"] = 1.0 if z_max > self.spike_z else 0.0
        return metrics


def _slice_means(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of each slice (last axis) inside the mask; slices without head count as 0."""
    counts = mask.sum(axis=(0, 1))
    sums = np.where(mask, data, 0.0).sum(axis=(0, 1))
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
