"""Standard display orientation for the live views, whatever the acquisition.

A volume's voxel axes can point anywhere (sagittal, coronal, oblique, head-to-foot slices). The views
show the volume re-ordered to the closest RAS+ axes (nibabel's ``io_orientation``: a transpose and
flips, no resampling, as FSLeyes and MRIcroGL do for display): axial with anterior up, coronal and
sagittal with superior up. Left/right follow the console's convention: radiological (the patient's
right on the screen's left, the scanner default) or neurological. Sagittal views show anterior on the
left. Pure numpy: the Qt side only asks which edge shows which direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel.orientations import apply_orientation, io_orientation

CONVENTIONS = ("radiological", "neurological")
VIEWS = ("axial", "coronal", "sagittal")

#: Per view: the RAS axis drawn along x and along y (0 = R, 1 = A, 2 = S) and the axis cut through.
VIEW_AXES = {"axial": (0, 1, 2), "coronal": (0, 2, 1), "sagittal": (1, 2, 0)}
_POSITIVE = "RAS"
_NEGATIVE = "LPI"


def x_inverted(view: str, convention: str) -> bool:
    """Whether the view's x axis runs right-to-left on screen (x grows towards the screen's left)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"left/right convention {convention!r}: one of {', '.join(CONVENTIONS)}")
    if view == "sagittal":
        return True  # anterior (growing x) on the left
    return convention == "radiological"  # the patient's right (growing x) on the screen's left


def edge_labels(view: str, convention: str) -> dict[str, str]:
    """The anatomical direction at each screen edge: {"left": "R", "right": "L", "top": "A", "bottom": "P"}."""
    ax, ay, _ = VIEW_AXES[view]
    grow, shrink = _POSITIVE[ax], _NEGATIVE[ax]
    left, right = (grow, shrink) if x_inverted(view, convention) else (shrink, grow)
    return {"left": left, "right": right, "top": _POSITIVE[ay], "bottom": _NEGATIVE[ay]}


@dataclass(frozen=True)
class Orientation:
    """How one grid's voxel axes map onto the display's RAS-ordered axes."""

    ornt: np.ndarray  # (3, 2): voxel axis -> (display axis, +1 or -1), as nibabel
    shape: tuple[int, int, int]  # the voxel grid's shape

    @classmethod
    def of(cls, affine: np.ndarray, shape: tuple[int, ...]) -> Orientation:
        return cls(io_orientation(np.asarray(affine, dtype=np.float64)), tuple(int(n) for n in shape[:3]))  # type: ignore[arg-type]

    def display(self, data: np.ndarray) -> np.ndarray:
        """``data`` re-ordered to R, A, S axes (a view: transposes and flips, no copy)."""
        return apply_orientation(data, self.ornt)

    @property
    def display_shape(self) -> tuple[int, int, int]:
        out = [0, 0, 0]
        for axis, (to, _) in enumerate(self.ornt):
            out[int(to)] = self.shape[axis]
        return tuple(out)  # type: ignore[return-value]

    def zooms(self, voxel_size: np.ndarray) -> tuple[float, float, float]:
        """Voxel edge lengths along the display's R, A, S axes."""
        out = [1.0, 1.0, 1.0]
        for axis, (to, _) in enumerate(self.ornt):
            out[int(to)] = float(voxel_size[axis]) or 1.0
        return tuple(out)  # type: ignore[return-value]

    def to_voxel(self, d: tuple[int, int, int]) -> tuple[int, int, int]:
        """A display (R, A, S-ordered) index to the voxel index of the original grid."""
        ijk = [0, 0, 0]
        for axis, (to, flip) in enumerate(self.ornt):
            c = int(d[int(to)])
            ijk[axis] = self.shape[axis] - 1 - c if flip < 0 else c
        return tuple(ijk)  # type: ignore[return-value]

    def to_display(self, ijk: tuple[int, int, int]) -> tuple[int, int, int]:
        """A voxel index of the original grid to the display index."""
        d = [0, 0, 0]
        for axis, (to, flip) in enumerate(self.ornt):
            c = int(ijk[axis])
            d[int(to)] = self.shape[axis] - 1 - c if flip < 0 else c
        return tuple(d)  # type: ignore[return-value]


def cut(display: np.ndarray, view: str, pos: tuple[int, int, int]) -> np.ndarray:
    """The 2-D image (x, y) of a view through display index ``pos`` of a RAS-ordered array."""
    r, a, s = pos
    if view == "axial":
        return display[:, :, s]
    if view == "coronal":
        return display[:, a, :]
    return display[r, :, :]
