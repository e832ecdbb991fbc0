"""projects/searchlight on the synthetic run with known activation, through a real worker and its Dask cluster."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rtcontrol.link.events import FeedbackEvent, Problem, route
from rtcontrol.paths import app_root
from rtcontrol.project import Result, RunContext, resolve_settings
from rtcontrol.scanner.synth import SynthSpec, generate
from rtcontrol.worker.client import WorkerClient
from rtcontrol.worker.embedded import local_worker
from rtcontrol.worker.projects import load_project_class
from tests.support.wait import wait_until

FOLDER = app_root() / "projects" / "searchlight"
SPEC = SynthSpec(volumes=36, shape=(32, 32, 18), motion_mm=0.5, seed=3)


@pytest.fixture(scope="module")
def synth():
    return generate(SPEC)


def in_box(point, box) -> bool:
    return all(lo - 0.5 <= p <= hi - 0.5 for p, (lo, hi) in zip(point, box))


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_the_searchlight_finds_the_activated_box_on_a_worker(synth, tmp_path: Path) -> None:
    box = synth.truth["activation"]["box_voxels"]
    feedback = []
    errors = []
    # main.py --worker, as the console starts it
    async with local_worker(data_dir=tmp_path / "runs", dask_processes=1) as w:
        async with WorkerClient(w.url, w.token, expected_fingerprint=w.fingerprint, on_event=route({
                                    FeedbackEvent: feedback.append,
                                    Problem: lambda e: errors.append(e.message)})) as client:
            await client.start_run("searchlight", {"window": 30}, run="sl", tr=SPEC.tr)
            for t in range(SPEC.volumes):
                await client.send_volume(synth.to_volume(t, run="sl"))
            await wait_until(lambda: len(feedback) == SPEC.volumes or errors, 150, "every volume's feedback")
            await client.stop_run()
    assert errors == []
    assert [e.index for e in feedback] == list(range(SPEC.volumes))
    assert all(e.feedback is None for e in feedback[:19])  # min_volumes: 20
    late = feedback[22:]
    for e in late:  # once it has seen off and on blocks, the region it finds is the activation box
        centre = (e.metrics["region_i"], e.metrics["region_j"], e.metrics["region_k"])
        assert in_box(centre, box), (e.index, centre, box)
    on = [e.feedback for e in late if (e.index // SPEC.block_volumes) % 2 == 1]
    off = [e.feedback for e in late if (e.index // SPEC.block_volumes) % 2 == 0]
    assert on and off and min(on) > max(off), (on, off)
    score = nib.load(next((tmp_path / "runs").glob("*/output/searchlight_score.nii.gz")))
    peak = np.unravel_index(np.argmax(np.asarray(score.dataobj)), score.shape)
    assert in_box(peak, box), (peak, box)


def test_the_searchlight_runs_without_a_cluster_too(synth) -> None:
    """The same project, tested on its own (ctx.map in process): same region."""
    cls = load_project_class(FOLDER)
    project = cls()
    ctx = RunContext.local(resolve_settings(cls.settings, {"window": 30, "motion_correction": False}), tr=SPEC.tr)
    project.start_run(ctx)
    results = [Result.of(project.process(synth.to_volume(t), ctx)) for t in range(SPEC.volumes)]
    last = results[-1].metrics
    assert in_box((last["region_i"], last["region_j"], last["region_k"]), synth.truth["activation"]["box_voxels"])


def test_bad_settings_are_refused_by_name() -> None:
    cls = load_project_class(FOLDER)
    with pytest.raises(ValueError, match="min_volumes"):
        cls().start_run(RunContext.local(resolve_settings(cls.settings, {"window": 10, "min_volumes": 20})))
