"""The smallest complete project: a starting point to copy.

Copy this folder to ``projects/<your_name>/`` (or any folder you pass to the worker with
``--projects``), rename the class, and change ``process``. See ``projects/README.md``.

Feedback here is the whole-brain mean of each volume relative to the mean of the first
``baseline`` volumes, mapped to 0..1 around 0.5 (``scale`` percent change = the full range).
"""

from __future__ import annotations

import numpy as np

from rtcontrol.project import Project, Result, RunContext, Setting
from rtcontrol.scanner.volume import Volume


class TemplateProject(Project):
    name = "Template"
    description = "Global mean signal relative to a baseline, mapped to 0..1 (a starting point to copy)."

    # Each Setting becomes a field in the console's run form; the values arrive in ctx.settings.
    settings = [
        Setting("baseline", 5, type="int", minimum=1, help="volumes averaged as the baseline"),
        Setting("scale", 2.0, type="float", minimum=0.01, help="percent change that spans the full 0..1 range"),
    ]

    def start_run(self, ctx: RunContext) -> None:
        # Per-run state lives on the project object: each run gets a new one (in its own process).
        self.baseline_values: list[float] = []
        ctx.log(f"template: baseline of {ctx.settings['baseline']} volumes, TR {ctx.tr}")

    def process(self, volume: Volume, ctx: RunContext) -> Result:
        # volume.data is read-only; scaled() gives real values as a new float32 array.
        mean = float(np.mean(volume.scaled()))
        base = self.baseline_values
        if len(base) < ctx.settings["baseline"]:
            base.append(mean)
            # No feedback during the baseline; metrics are still plotted on the console.
            return Result(feedback=None, metrics={"global_mean": mean})
        reference = float(np.mean(base))
        percent = 100.0 * (mean - reference) / reference if reference else 0.0
        level = float(np.clip(0.5 + percent / (2.0 * ctx.settings["scale"]), 0.0, 1.0))
        # A statistical map for the console's live views (a 3-D array on the volume's grid) goes in maps:
        # Result(..., maps={"t": t_map}) is drawn as the activation overlay (see projects/README.md, GlmStep).
        return Result(feedback=level, metrics={"global_mean": mean, "percent_change": percent})

    def end_run(self, ctx: RunContext) -> None:
        ctx.log("template: run over")
