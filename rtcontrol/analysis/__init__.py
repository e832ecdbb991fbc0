"""Real-time analysis steps: motion correction, quality metrics, detrending/GLM, ROIs, smoothing.

Qt-free and numpy/scipy only; used by ``projects/`` and ``plugins/``. The public surface::

    from rtcontrol.analysis import MotionCorrector, QualityMonitor, RunningModel, RoiSpec, ...
"""

from rtcontrol.analysis.drift import DriftBasis
from rtcontrol.analysis.glm import IncrementalGLM, RunningModel
from rtcontrol.analysis.images import load_volume
from rtcontrol.analysis.motion import MotionCorrector, MotionError, MotionResult
from rtcontrol.analysis.quality import QualityMonitor, RobustZ, RunningTsnr, head_mask
from rtcontrol.analysis.roi import PercentSignalChange, Roi, RoiSpec
from rtcontrol.analysis.smooth import fwhm_to_sigma, smooth
from rtcontrol.analysis.steps import Frame, GlmStep, MotionStep, Pipeline, QualityStep, RoiMeanStep, SmoothStep, Step

__all__ = [
    "DriftBasis", "Frame", "GlmStep", "IncrementalGLM", "MotionCorrector", "MotionError", "MotionResult", "MotionStep",
    "PercentSignalChange", "Pipeline", "QualityMonitor", "QualityStep", "RobustZ", "Roi", "RoiMeanStep", "RoiSpec",
    "RunningModel", "RunningTsnr", "SmoothStep", "Step", "fwhm_to_sigma", "head_mask", "load_volume", "smooth",
]  # fmt: skip
