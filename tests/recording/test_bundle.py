"""The bundle check, from pytest: only on request (a bundle build takes minutes; ``make bundle-check`` is the
usual way)."""

from __future__ import annotations

import os

import pytest

from rtcontrol.paths import app_root
from tools import bundle_check


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(os.environ.get("RTCONTROL_BUNDLE_TEST") != "1",
                    reason="set RTCONTROL_BUNDLE_TEST=1 after 'make bundle' to run the bundle check from pytest")
def test_bundle_check_passes() -> None:
    bundle = app_root() / "dist" / "rtcontrol"
    if not (bundle / "rtcontrol").exists():
        pytest.fail(f"no bundle at {bundle}: run 'make bundle' first")
    assert bundle_check.main([str(bundle)]) == 0
