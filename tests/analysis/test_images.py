"""Reading a reference image from an earlier run (the dcm2niix NIfTI of a real series)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rtcontrol.analysis.images import load_volume
from rtcontrol.analysis.motion import MotionCorrector


def test_reference_from_dcm2niix_nifti_of_a_real_series(reference_root: Path) -> None:
    path = next((reference_root / "siemens_xa30_enhanced_bold_20vol").glob("*.nii.gz"))
    vol = load_volume(path, index=3)
    assert vol.shape == (64, 64, 33) and vol.index == 3
    with pytest.raises(ValueError, match="volume 99 does not exist"):
        load_volume(path, index=99)
    # registering volume 3 of the file to itself, given as an earlier run's reference: no motion
    mc = MotionCorrector(path, reference_volume=3)
    np.testing.assert_allclose(mc.process(vol).params, 0.0, atol=1e-4)


def test_unreadable_reference_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "ref.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ValueError, match="not a readable NIfTI"):
        load_volume(bad)
