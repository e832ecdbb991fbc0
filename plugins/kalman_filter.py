"""Example plugin: a Kalman filter that smooths a feedback signal and clips its spikes.

A drop-in processing step (see ``plugins/README.md``). It models the signal as a slowly
wandering level seen through noise (a local-level state-space model)::

    level[t] = level[t-1] + w,   w ~ N(0, process_var)
    value[t] = level[t] + v,     v ~ N(0, measurement_var)

and reports the filtered level. An innovation larger than ``clip_sd`` predicted standard
deviations is clipped first, so a single spiky volume moves the feedback only a little (the
idea of OpenNFT's modified Kalman filter). Constant cost per volume; NaN values (a baseline
still being collected) pass through without updating the filter.

Use it from ``roi_feedback`` with the setting ``post_steps = "kalman"``: it then smooths
``values["psc"]`` before the thermometer mapping, and plots ``psc_raw`` beside ``psc``.
"""

from __future__ import annotations

import math

from rtcontrol.analysis.steps import Frame, Step
from rtcontrol.project import Setting


class KalmanFilter(Step):
    name = "kalman"
    description = "Kalman filter (local level) with spike clipping for a feedback value"
    settings = [
        Setting("key", "psc", "str", "which value to filter (frame.values[key])"),
        Setting("process_var", 0.05, "float", "variance of the level's change per volume (signal units^2)",
                minimum=0.0),
        Setting("measurement_var", 0.25, "float", "variance of the noise on each value (signal units^2)",
                minimum=1e-12),
        Setting("clip_sd", 3.0, "float", "innovations beyond this many predicted SDs are clipped", minimum=0.5),
    ]

    def start(self) -> None:
        self.level: float | None = None
        self.var = 0.0

    def process(self, frame: Frame) -> None:
        key = self.config["key"]
        if key not in frame.values:
            raise KeyError(f"kalman: no value {key!r} in this frame (values: {', '.join(frame.values) or 'none'})")
        value = float(frame.values[key])
        frame.metrics[f"{key}_raw"] = value
        if math.isnan(value):
            return
        q, r, k_sd = self.config["process_var"], self.config["measurement_var"], self.config["clip_sd"]
        if self.level is None:
            self.level, self.var = value, r
        else:
            predicted_var = self.var + q
            innovation_var = predicted_var + r
            innovation = value - self.level
            limit = k_sd * math.sqrt(innovation_var)
            innovation = max(-limit, min(limit, innovation))
            gain = predicted_var / innovation_var
            self.level += gain * innovation
            self.var = (1.0 - gain) * predicted_var
        frame.values[key] = self.level
        frame.metrics[key] = self.level
