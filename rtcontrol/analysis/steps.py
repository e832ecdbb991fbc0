"""Processing steps: small stateful objects a project (or a plugin) chains per volume.

A :class:`Frame` carries one volume through the chain: ``data`` (float32 on ``affine``'s grid)
is the image as processed so far, ``metrics`` are numbers for the console's plots, ``values``
holds anything steps hand to later steps (``"motion"``: the six parameters, ``"roi_mean"``...).
A :class:`Step` has settings (declared like a project's), ``start()`` once per run and
``process(frame)`` per volume, at a cost that does not grow with the run::

    pipeline = Pipeline([MotionStep(), QualityStep(), SmoothStep(fwhm_mm=5), RoiMeanStep(spec)])
    frame = pipeline.process(volume)   # frame.metrics -> {"tx": ..., "fd": ..., "roi_mean": ...}

Plugins add Step subclasses (see ``plugins/README.md``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from rtcontrol.analysis.drift import DriftBasis
from rtcontrol.analysis.glm import RunningModel
from rtcontrol.analysis.motion import MotionCorrector, MotionError
from rtcontrol.analysis.quality import QualityMonitor, head_mask
from rtcontrol.analysis.roi import Roi, RoiSpec
from rtcontrol.analysis.smooth import smooth
from rtcontrol.project import Setting, resolve_settings
from rtcontrol.rigid import matrix_to_params
from rtcontrol.scanner.volume import Volume


@dataclass
class Frame:
    """One volume on its way through a pipeline."""

    volume: Volume
    data: np.ndarray
    affine: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, volume: Volume) -> Frame:
        return cls(volume=volume, data=volume.scaled(np.float32), affine=np.asarray(volume.affine, dtype=np.float64))

    @property
    def index(self) -> int:
        return self.volume.index


class Step:
    """Base class of a processing step. Subclasses set ``name`` and override :meth:`process`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    settings: ClassVar[list[Setting]] = []

    def __init__(self, **settings: Any) -> None:
        self.config = resolve_settings(self.settings, settings)
        self.start()

    def start(self) -> None:
        """Reset per-run state (called on construction and again before each run)."""

    def process(self, frame: Frame) -> None:
        """Once per volume: read and update ``frame``."""
        raise NotImplementedError


class Pipeline:
    """Steps run in order on each volume."""

    def __init__(self, steps: Iterable[Step]) -> None:
        self.steps = list(steps)

    def start(self) -> None:
        for step in self.steps:
            step.start()

    def process(self, volume: Volume) -> Frame:
        frame = Frame.of(volume)
        for step in self.steps:
            step.process(frame)
        return frame


class MotionStep(Step):
    """Registers each volume to the reference; replaces ``data`` by the resliced volume."""

    name = "motion"
    description = "rigid-body motion correction (six parameters tx..rz, resliced volume)"
    settings = [
        Setting("reference", "", "path", "NIfTI reference from an earlier run; empty: a volume of this run"),
        Setting("reference_index", 0, "int", "volume of this run used as reference when no file is given", minimum=0),
        Setting("reslice", "linear", "choice", "interpolation of the corrected volume", choices=("linear", "cubic")),
    ]

    def start(self) -> None:
        c = self.config
        self.corrector = MotionCorrector(c["reference"] or None, reference_index=c["reference_index"],
                                         reslice=c["reslice"])

    def process(self, frame: Frame) -> None:
        # register what earlier steps made of the volume (usually this step comes first)
        current = Volume(data=frame.data, affine=frame.affine, run=frame.volume.run, index=frame.index)
        try:
            result = self.corrector.process(current)
        except MotionError as exc:
            # one bad volume must not end the run: say so, and carry on with the last good pose
            frame.values["motion_error"] = f"volume {frame.index}: {exc}"
            frame.metrics["motion_ok"] = 0.0
            if not self.corrector.has_reference:
                return
            T = self.corrector.last_matrix
            frame.values["motion"] = matrix_to_params(T, self.corrector.centre)
            frame.data = self.corrector.apply(frame.data, frame.affine, T)
            frame.affine = self.corrector.reference_affine
            return
        frame.values["motion"] = result.params
        frame.values["motion_result"] = result
        frame.metrics.update(result.metrics())
        frame.metrics["motion_ok"] = 1.0
        if result.resliced is not None:
            frame.data, frame.affine = result.resliced, result.affine


class QualityStep(Step):
    """FD, DVARS, running tSNR and spikes (needs ``values["motion"]`` for FD)."""

    name = "quality"
    description = "framewise displacement, DVARS, running tSNR, spike detection"
    settings = [Setting("spike_z", 5.0, "float", "robust z-score above which a volume counts as a spike", minimum=1.0)]

    def start(self) -> None:
        self.monitor = QualityMonitor(spike_z=self.config["spike_z"])

    def process(self, frame: Frame) -> None:
        frame.metrics.update(self.monitor.update(frame.data, frame.values.get("motion")))


class SmoothStep(Step):
    """Gaussian smoothing of ``data`` (FWHM in mm, anisotropic voxels handled)."""

    name = "smooth"
    description = "spatial Gaussian smoothing"
    settings = [Setting("fwhm_mm", 5.0, "float", "kernel full width at half maximum (mm)", minimum=0.0)]

    def process(self, frame: Frame) -> None:
        frame.data = smooth(frame.data, frame.affine, self.config["fwhm_mm"])


class RoiMeanStep(Step):
    """Mean of an ROI into ``metrics[<name>_mean]`` and ``values[<name>_mean]``.

    Built from a :class:`RoiSpec` (``RoiMeanStep(spec=...)``) or from settings: ``roi_kind``
    box_voxel / box_world / mask with ``lo``/``hi`` or ``mask``. Placed on the grid of the
    first volume it sees (after motion correction that is the reference grid).
    """

    name = "roi_mean"
    description = "mean signal in a region of interest"
    settings = [
        Setting("roi_name", "roi", "str", "name used for the metric (<name>_mean)"),
        Setting("roi_kind", "box_world", "choice", "how the ROI is given", choices=("box_world", "box_voxel", "mask")),
        Setting("lo", [0.0, 0.0, 0.0], "vector3", "box corner (mm or voxel indices)"),
        Setting("hi", [0.0, 0.0, 0.0], "vector3", "opposite box corner"),
        Setting("mask", "", "path", "NIfTI mask (any space) when roi_kind is mask"),
    ]

    def __init__(self, spec: RoiSpec | None = None, **settings: Any) -> None:
        super().__init__(**settings)
        c = self.config
        self.roi: Roi | None = None
        if spec is None:
            if c["roi_kind"] == "mask":
                spec = RoiSpec.mask(c["mask"], name=c["roi_name"])
            else:
                spec = RoiSpec(c["roi_kind"], lo=tuple(c["lo"]), hi=tuple(c["hi"]), name=c["roi_name"])
        self.spec = spec

    def start(self) -> None:
        self.roi = None

    def process(self, frame: Frame) -> None:
        if self.roi is None:
            self.roi = self.spec.on_grid(frame.data.shape, frame.affine)
        key = f"{self.spec.name}_mean"
        value = self.roi.mean(frame.data)
        frame.values[key] = value
        frame.metrics[key] = value


class GlmStep(Step):
    """Voxelwise incremental GLM inside the head: drift + motion (+ an off/on block regressor).

    Per volume, at constant cost: adds the volume to the model; with ``clean`` replaces ``data``
    in the head by its cleaned values (drift and motion removed, level and task kept); with a
    block regressor puts the task t-map in ``values["t_map"]`` (a volume, 0 outside the head)
    and its maximum in ``metrics["glm_t_max"]``. The head mask is taken from the first volume.
    """

    name = "glm"
    description = "incremental voxelwise GLM (drift, motion, optional blocks): cleaned data and a t-map"
    settings = [
        Setting("drift", "legendre", "choice", "slow-drift model", choices=("legendre", "dct", "none")),
        Setting("drift_order", 2, "int", "Legendre order", minimum=0, maximum=6),
        Setting("highpass_s", 128.0, "float", "DCT high-pass cut-off (s)", minimum=10.0),
        Setting("expected_volumes", 200, "int", "expected run length (volumes)", minimum=10),
        Setting("motion_regressors", True, "bool", "model the six motion parameters (needs the motion step)"),
        Setting("block_volumes", 0, "int", "off/on block length, starting off; 0 = no task regressor", minimum=0),
        Setting("clean", True, "bool", "replace the data in the head by the cleaned data"),
    ]

    def start(self) -> None:
        self.model: RunningModel | None = None
        self._first = 0

    def process(self, frame: Frame) -> None:
        c = self.config
        if self.model is None:
            self._mask = head_mask(frame.data)
            self._index = np.flatnonzero(self._mask)
            self._first = frame.index
            self.model = RunningModel(
                self._index.size,
                drift=_drift(c, frame.volume.tr),
                motion=c["motion_regressors"],
                n_task=1 if c["block_volumes"] > 0 else 0,
            )
        t = frame.index - self._first
        motion = frame.values.get("motion") if self.model.n_motion else None
        if self.model.n_motion and motion is None:
            raise ValueError("glm: motion_regressors needs the motion step before it in the pipeline")
        task = [float((t // c["block_volumes"]) % 2 == 1)] if self.model.n_task else None
        flat = frame.data.reshape(-1)
        if c["clean"]:
            cleaned = self.model.update(t, flat[self._index], motion, task)
            out = frame.data.copy().reshape(-1)
            out[self._index] = cleaned
            frame.data = out.reshape(frame.data.shape)
        else:  # only the t-map: no cleaned data to compute
            self.model.glm.add(self.model.row(t, motion, task), flat[self._index])
        if self.model.n_task:
            contrast = np.zeros(self.model.p)
            contrast[-1] = 1.0
            t_map = np.zeros(flat.size, dtype=np.float32)
            t_map[self._index] = self.model.glm.t_values(contrast)
            frame.values["t_map"] = t_map.reshape(frame.data.shape)
            frame.metrics["glm_t_max"] = float(t_map.max())


def _drift(c: dict[str, Any], tr: float | None) -> DriftBasis | None:
    if c["drift"] == "none":
        return None
    if c["drift"] == "dct":
        if not tr:
            raise ValueError("glm: drift = dct needs the volumes' TR")
        return DriftBasis.high_pass(tr, c["expected_volumes"], c["highpass_s"])
    return DriftBasis("legendre", c["expected_volumes"], c["drift_order"])


BUILTIN_STEPS: dict[str, type[Step]] = {s.name: s for s in (MotionStep, QualityStep, SmoothStep, RoiMeanStep, GlmStep)}
