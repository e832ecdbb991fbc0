"""roi_feedback's activation map: with the protocol's blocks it returns the t-map of the block contrast,
which peaks in the simulator's activation box, and the feedback is exactly what it is without the map."""

from __future__ import annotations

import numpy as np
import pytest

from rtcontrol.paths import projects_dir
from rtcontrol.project import T_MAP, Result, RunContext, resolve_settings
from rtcontrol.scanner.synth import SynthSpec, generate
from rtcontrol.worker.projects import load_project_class

FOLDER = projects_dir() / "roi_feedback"
VOLUMES = 50


@pytest.fixture(scope="module")
def synth_run():
    return generate(SynthSpec(volumes=VOLUMES, seed=6, motion_mm=1.0))


def run_project(run, with_map: bool = True, **settings) -> list[Result]:
    cls = load_project_class(FOLDER)
    ctx = RunContext.local(resolve_settings(cls.settings, {"expected_volumes": VOLUMES, **settings}), tr=run.spec.tr)
    project = cls()
    project.start_run(ctx)
    if not with_map:
        project.glm = None
    results = [Result.of(project.process(run.to_volume(t), ctx)) for t in range(run.spec.volumes)]
    project.end_run(ctx)
    return results


def test_the_t_map_peaks_in_the_activation_box(synth_run) -> None:
    results = run_project(synth_run, block_volumes=synth_run.spec.block_volumes)
    # from the volume after the model's 10 regressors (constant, drift, six motion parameters, the block)
    assert [i for i, r in enumerate(results) if r.maps] == list(range(10, VOLUMES))
    last = results[-1]
    t_map = last.maps[T_MAP]
    assert t_map.shape == synth_run.spec.shape
    np.testing.assert_allclose(last.map_affine, synth_run.affine, atol=1e-6)  # the reference: volume 0's grid
    box = tuple(slice(lo, hi) for lo, hi in synth_run.truth["activation"]["box_voxels"])
    peak = np.unravel_index(int(np.argmax(t_map)), t_map.shape)
    assert all(s.start <= p < s.stop for p, s in zip(peak, box)), (peak, box)
    outside = np.ones(t_map.shape, bool)
    outside[box] = False
    assert np.median(t_map[box]) > 5.0 > np.percentile(np.abs(t_map[outside & (t_map != 0)]), 99)


def test_the_map_changes_nothing_on_the_feedback_path(synth_run) -> None:
    settings = {"block_volumes": synth_run.spec.block_volumes}
    with_map = run_project(synth_run, **settings)
    without = run_project(synth_run, with_map=False, **settings)
    assert [r.feedback for r in with_map] == [r.feedback for r in without]
    for a, b in zip(with_map, without):  # the GLM adds its peak t, nothing else (NaN equals NaN here)
        np.testing.assert_equal({k: v for k, v in a.metrics.items() if k != "glm_t_max"}, b.metrics)
    assert not any(r.maps for r in without)


def test_no_blocks_no_map(synth_run) -> None:
    results = run_project(synth_run)
    assert not any(r.maps for r in results)
