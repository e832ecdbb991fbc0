"""The region of interest to draw over the live views, from the project's own ROI settings.

Projects such as ``roi_feedback`` declare their ROI as settings (``roi_kind`` with ``roi_lo``/``roi_hi``
or ``roi_mask``); the console places the same ROI on the run's grid with the same code the worker
uses (:class:`rtcontrol.analysis.roi.RoiSpec`), so the overlay shows exactly the voxels averaged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rtcontrol.analysis.roi import RoiSpec


def roi_spec(settings: dict[str, Any]) -> RoiSpec | None:
    """The ROI the settings describe, or None when the project has no ROI settings."""
    kind = settings.get("roi_kind")
    if kind in ("box_world", "box_voxel") and "roi_lo" in settings and "roi_hi" in settings:
        make = RoiSpec.box_world if kind == "box_world" else RoiSpec.box_voxel
        return make(settings["roi_lo"], settings["roi_hi"])
    if kind == "mask" and settings.get("roi_mask"):
        label = int(settings.get("roi_label") or 0)
        return RoiSpec.mask(settings["roi_mask"], label=label or None)
    return None


def roi_mask(settings: dict[str, Any], shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray | None:
    """A boolean mask on the run's grid (None without ROI settings); raises ValueError if it is empty."""
    spec = roi_spec(settings)
    if spec is None:
        return None
    roi = spec.on_grid(shape, affine)
    return np.asarray(roi.mask, dtype=bool)
