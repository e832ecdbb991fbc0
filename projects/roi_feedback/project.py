"""Neurofeedback from a region of interest: percent signal change against a baseline, as 0..1.

Per volume: motion correction to the run's first (non-dummy) volume or an earlier run's image,
quality metrics (FD, DVARS, tSNR, spikes), optional smoothing, the ROI mean, then a running
model (constant + slow drift, and when the protocol's blocks are given, the block regressor and
the six motion parameters) that removes drift and motion from the ROI signal. The percent change of the cleaned signal
against the mean of the baseline window is mapped linearly from [psc_min, psc_max] to [0, 1]
for a thermometer. Everything per volume costs the same at volume 10 and at volume 1000.

The ROI is a box in world millimetres (RAS+, as in the console's viewer), a box in voxel
indices of the run's grid, or a NIfTI mask in any space (resampled once to the run's grid).
Plugin steps named in ``post_steps`` run after the percent change is computed and may change
``values["psc"]`` (e.g. ``kalman`` from ``plugins/kalman_filter.py`` to smooth the feedback).

With blocks given, a voxelwise incremental GLM of the same model (``GlmStep``) also returns the t-map of
the block contrast with every volume, which the console draws over its live views; it reads the data the
ROI mean reads and changes nothing on the feedback path.
"""

from __future__ import annotations

import math

import numpy as np

from rtcontrol.analysis.drift import DriftBasis
from rtcontrol.analysis.roi import PercentSignalChange, RoiSpec
from rtcontrol.analysis.steps import (
    Frame,
    GlmStep,
    MotionStep,
    Pipeline,
    QualityStep,
    RoiMeanStep,
    SmoothStep,
    Step,
)
from rtcontrol.project import CONDITION_METRIC, T_MAP, Block, Design, Project, Result, RunContext, Setting
from rtcontrol.scanner.volume import Volume


class RoiFeedback(Project):
    name = "ROI feedback"
    description = (
        "Percent signal change in a region of interest against a baseline window, with motion correction "
        "and running drift/motion removal, mapped to 0..1 for a thermometer."
    )
    settings = [
        Setting("roi_kind", "box_world", "choice", "how the ROI is given", choices=("box_world", "box_voxel", "mask")),
        # the default box is where the scanner simulator (main.py synth) puts its activation
        Setting("roi_lo", [18.0, -48.0, 10.0], "vector3",
                "box corner: RAS+ mm (box_world) or voxel i, j, k (box_voxel)"),
        Setting("roi_hi", [36.0, -28.0, 27.0], "vector3", "opposite box corner (inclusive)"),
        Setting("roi_mask", "", "path", "NIfTI mask in any space (roi_kind = mask)"),
        Setting("roi_label", 0, "int", "mask label to use; 0 = every non-zero voxel", minimum=0),
        Setting("skip_volumes", 0, "int", "dummy scans at the start: no feedback, not modelled", minimum=0),
        Setting("baseline_start", 0, "int", "first baseline volume, counted after the skipped ones", minimum=0),
        Setting("baseline_volumes", 10, "int", "length of the baseline window (volumes)", minimum=1),
        Setting("psc_min", -1.0, "float", "percent signal change shown as an empty thermometer (0)"),
        Setting("psc_max", 3.0, "float", "percent signal change shown as a full thermometer (1)"),
        Setting("motion_correction", True, "bool", "register each volume to the reference before the ROI mean"),
        Setting("reference", "", "path", "reference image from an earlier run (NIfTI); empty: first volume"),
        Setting(
            "motion_regressors", "auto", "choice",
            "remove the six motion parameters from the ROI signal; auto: only when the blocks are modelled "
            "(without a task model they absorb part of the activation)",
            choices=("auto", "on", "off"),
        ),
        Setting("drift", "legendre", "choice", "slow-drift model", choices=("legendre", "dct", "none")),
        Setting("drift_order", 2, "int", "Legendre polynomial order (drift = legendre)", minimum=0, maximum=6),
        Setting("highpass_s", 128.0, "float", "high-pass cut-off period in s (drift = dct)", minimum=10.0),
        Setting("expected_volumes", 200, "int", "expected run length, for the drift basis", minimum=10),
        Setting("block_volumes", 0, "int", "if > 0: off/on blocks of this length (starting off) are modelled",
                minimum=0),
        Setting("smoothing_fwhm", 0.0, "float", "spatial smoothing before the ROI mean (mm FWHM; 0 = none)",
                minimum=0.0),
        Setting("post_steps", "", "str", "plugin steps run after the percent change, comma-separated (e.g. kalman)"),
    ]

    def design(self, settings: dict) -> Design:
        """Baseline and feedback blocks: the protocol's off/on blocks when ``block_volumes`` is set, else the
        baseline window then feedback to the expected end (volume indices include the dummies)."""
        s = settings
        skip, total = s["skip_volumes"], s["skip_volumes"] + s["expected_volumes"]
        if s["block_volumes"] > 0:
            return Design.alternating(("baseline", "feedback"), s["block_volumes"], total, start=skip)
        start = skip + s["baseline_start"]
        end = start + s["baseline_volumes"]
        blocks = [Block("baseline", start, s["baseline_volumes"])]
        if end < total:
            blocks.append(Block("feedback", end, total - end))
        return Design(("baseline", "feedback"), tuple(blocks))

    def start_run(self, ctx: RunContext) -> None:
        s = ctx.settings
        self.run_design = self.design(s)
        if not s["psc_max"] > s["psc_min"]:
            raise ValueError(f"psc_max ({s['psc_max']}) must be above psc_min ({s['psc_min']})")
        steps: list[Step] = []
        if s["motion_correction"]:
            steps.append(MotionStep(reference=s["reference"], reference_index=s["skip_volumes"]))
        steps.append(QualityStep())
        if s["smoothing_fwhm"] > 0:
            steps.append(SmoothStep(fwhm_mm=s["smoothing_fwhm"]))
        steps.append(RoiMeanStep(spec=roi_spec(s)))
        self.pipeline = Pipeline(steps)  # steps start fresh when built
        self.post = Pipeline(_plugin_steps(s["post_steps"]))
        self.psc = PercentSignalChange(
            baseline_start=s["baseline_start"],
            baseline_length=s["baseline_volumes"],
            drift=drift_basis(s, ctx.tr),
            motion=use_motion_regressors(s),
            n_task=1 if s["block_volumes"] > 0 else 0,
        )
        if self.psc.model.n_drift and not s["block_volumes"]:
            ctx.log(
                "roi_feedback: drift terms without a task model follow each block (refitted every volume, their "
                "newest value tracks the step), so the feedback decays through an on-block; set block_volumes "
                "to the protocol's block length"
            )
        self.glm = activation_glm(s)
        if self.psc.model.n_motion and not s["block_volumes"]:
            ctx.log(
                "roi_feedback: motion regressors without a task model can absorb part of the activation; "
                "set block_volumes to the protocol's block length (or motion_regressors to auto/off)"
            )
        ctx.log(
            f"roi_feedback: ROI {s['roi_kind']}, baseline volumes {s['baseline_start']}.."
            f"{s['baseline_start'] + s['baseline_volumes'] - 1} after {s['skip_volumes']} dummies, "
            f"psc {s['psc_min']}..{s['psc_max']} % -> 0..1"
        )

    def process(self, volume: Volume, ctx: RunContext) -> Result:
        s = ctx.settings
        t = volume.index - s["skip_volumes"]
        if t < 0:
            return Result(feedback=None)  # a dummy scan (not at steady state): kept out of everything
        frame = self.pipeline.process(volume)
        code = self.run_design.code_at(volume.index)
        if not math.isnan(code):
            frame.metrics[CONDITION_METRIC] = code  # the console shades the timecourses by it
        if "motion_error" in frame.values:
            # a corrupt volume: no feedback from it and it stays out of the model; the run goes on
            ctx.log(f"roi_feedback: skipped, motion correction failed: {frame.values['motion_error']}")
            return Result(feedback=None, metrics=dict(frame.metrics))
        maps = self.t_map(frame)
        roi_mean = frame.values["roi_mean"]
        motion = frame.values.get("motion") if self.psc.model.n_motion else None
        task = [_block(t, s["block_volumes"])] if s["block_volumes"] > 0 else None
        psc = self.psc.update(t, roi_mean, motion, task)
        frame.values["psc"] = psc
        for step in self.post.steps:
            step.process(frame)
        psc = float(frame.values["psc"])
        metrics = dict(frame.metrics)
        metrics["psc"] = psc
        if math.isnan(psc):  # baseline still being collected
            return Result(feedback=None, metrics=metrics, maps=maps, map_affine=frame.affine)
        level = float(np.clip((psc - s["psc_min"]) / (s["psc_max"] - s["psc_min"]), 0.0, 1.0))
        metrics["feedback"] = level
        return Result(feedback=level, metrics=metrics, maps=maps, map_affine=frame.affine)

    def t_map(self, frame: Frame) -> dict[str, np.ndarray]:
        """``Result.maps``: the block contrast's t-map on ``frame.affine``'s grid (the motion reference's);
        empty without blocks and until the model has more volumes than regressors."""
        if self.glm is None:
            return {}
        self.glm.process(frame)  # clean=False: frame.data, and so the ROI path, are unchanged
        model = self.glm.model
        if model is None or model.glm.n <= model.p:
            return {}
        return {T_MAP: frame.values["t_map"]}

    def end_run(self, ctx: RunContext) -> None:
        ctx.log("roi_feedback: run over")


def activation_glm(s: dict) -> GlmStep | None:
    """The voxelwise GLM of the feedback model (drift, motion, the block regressor) for the t-map; None
    without blocks (there is no contrast to map)."""
    if s["block_volumes"] <= 0:
        return None
    return GlmStep(drift=s["drift"], drift_order=s["drift_order"], highpass_s=s["highpass_s"],
                   expected_volumes=s["expected_volumes"], motion_regressors=use_motion_regressors(s),
                   block_volumes=s["block_volumes"], clean=False)


def use_motion_regressors(s: dict) -> bool:
    if not s["motion_correction"] or s["motion_regressors"] == "off":
        return False
    return s["motion_regressors"] == "on" or s["block_volumes"] > 0


def roi_spec(s: dict) -> RoiSpec:
    if s["roi_kind"] == "mask":
        if not s["roi_mask"]:
            raise ValueError("roi_kind is mask but no roi_mask file is given")
        return RoiSpec.mask(s["roi_mask"], label=s["roi_label"] or None)
    if s["roi_kind"] == "box_voxel":
        return RoiSpec.box_voxel(s["roi_lo"], s["roi_hi"])
    return RoiSpec.box_world(s["roi_lo"], s["roi_hi"])


def drift_basis(s: dict, tr: float | None) -> DriftBasis | None:
    if s["drift"] == "none":
        return None
    if s["drift"] == "dct":
        if not tr:
            raise ValueError("drift = dct needs the TR (the console sends it with the run)")
        return DriftBasis.high_pass(tr, s["expected_volumes"], s["highpass_s"])
    return DriftBasis("legendre", s["expected_volumes"], s["drift_order"])


def _block(t: int, n: int) -> float:
    """1 during the 'on' blocks of an off/on design that starts 'off'."""
    return float((t // n) % 2 == 1)


def _plugin_steps(names: str) -> list[Step]:
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        return []
    from rtcontrol.analysis.plugins import discover

    registry = discover()
    missing = [n for n in wanted if n not in registry.steps]
    if missing:
        problems = "; ".join(f"{e.source}: {e.message.strip().splitlines()[-1]}" for e in registry.errors)
        raise ValueError(
            f"no plugin step named {', '.join(missing)}; available: {', '.join(sorted(registry.steps))}"
            + (f" (plugins that failed to load: {problems})" if problems else "")
        )
    return [registry.create_step(n) for n in wanted]
