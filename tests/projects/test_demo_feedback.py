"""The demo's feedback follows the simulated activation (issue 13): roi_feedback run with the demo's own
settings (resources/demo_run.toml) on the run its simulated scanner acquires.

Before the fix the demo did not tell roi_feedback its protocol, so the running model was constant + drift
only: refitted every volume over the volumes so far, the drift terms evaluated at the newest volume (the
free end of the polynomial) followed each block's step, and the percent change rose through every rest
block and decayed through every on-block.
"""

from __future__ import annotations

import numpy as np
import pytest

from rtcontrol.console.settings import demo_settings
from rtcontrol.console.simulator import demo_spec
from rtcontrol.paths import projects_dir
from rtcontrol.project import run_offline
from rtcontrol.scanner.synth import generate


@pytest.fixture(scope="module")
def demo_run():
    s = demo_settings()
    run = generate(demo_spec(s.run.expected_volumes, s.run.tr))
    return s, run


@pytest.mark.parametrize("post_steps", ["", "kalman"])
def test_demo_feedback_follows_the_simulated_blocks(demo_run, post_steps: str) -> None:
    s, run = demo_run
    settings = {**s.project.settings, "post_steps": post_steps}
    results = run_offline(projects_dir() / s.project.name, [run.to_volume(t) for t in range(run.spec.volumes)],
                          settings)
    feedback = np.array([np.nan if r.feedback is None else r.feedback for r in results])
    on = np.asarray(run.truth["activation"]["timecourse"]) > 0  # no haemodynamic delay in the simulator: lag 0
    ok = np.isfinite(feedback)
    assert ok.sum() >= run.spec.volumes - s.project.settings.get("baseline_volumes", 10)
    r = np.corrcoef(feedback[ok], on[ok])[0, 1]
    assert r > 0.8, f"the demo's feedback correlates {r:.2f} with the simulated blocks"
    # the steady state of each block: the second half of every on-block well above that of the rest before it
    n = run.spec.block_volumes
    for onset in run.truth["activation"]["onsets_volumes"]:
        late_on = np.nanmean(feedback[onset + n // 2: onset + n])
        late_rest = np.nanmean(feedback[onset - n + n // 2: onset])
        assert late_on > late_rest + 0.25, f"block at volume {onset}: {late_on:.2f} on vs {late_rest:.2f} at rest"
    if not post_steps:  # no filter: flat blocks, neither a decay through the on-blocks nor a rise through rest
        for first in range(n, run.spec.volumes - n + 1, n):
            block = feedback[first: first + n]
            drift = np.nanmean(block[n // 2:]) - np.nanmean(block[: n // 2])
            assert abs(drift) < 0.1, f"feedback {'on' if on[first] else 'rest'} block at {first} drifts by {drift:.2f}"


def test_the_demo_models_the_simulated_protocol() -> None:
    s = demo_settings()
    assert s.project.settings.get("block_volumes") == demo_spec(10, 1.0).block_volumes
