"""The project's t-map travels from the worker to the console's model over the real links.

The demo's own path: the simulated scanner writes the synthetic run (known activation box) into the watch
folder, the console reads it, the embedded worker (TLS on 127.0.0.1, a run process per run) runs roi_feedback
with the protocol's blocks, and its t-map comes back as a map event into ``controller.model.maps``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from rtcontrol.console import events as ev
from rtcontrol.console import settings as S
from rtcontrol.console.headless import run_session
from rtcontrol.console.session import ConsoleSession
from rtcontrol.scanner.synth import SynthSpec, default_box, synth_affine

pytestmark = pytest.mark.timeout(180)

VOLUMES, TR, BLOCK = 36, 0.25, SynthSpec.block_volumes  # the blocks the simulated scanner uses


async def test_the_t_map_reaches_the_console_model(tmp_path: Path) -> None:
    s = S.default_settings().with_values("run", tr=TR)
    s = s.with_values("project", name="roi_feedback",
                      settings={"block_volumes": BLOCK, "expected_volumes": VOLUMES, "baseline_volumes": 5})
    session = ConsoleSession(s, demo=True, demo_volumes=VOLUMES, runs_dir=tmp_path / "runs")
    arrived: list[ev.MapArrived] = []
    session.controller.events.subscribe(lambda e: arrived.append(e) if isinstance(e, ev.MapArrived) else None)
    out = io.StringIO()
    assert await run_session(session, out=out, quiet=True) == 0, out.getvalue()

    model = session.controller.model
    assert model.volumes == VOLUMES
    stat = model.maps.get("t")
    assert stat is not None, f"no t-map reached the console; events: {arrived}"
    # one per volume, in order, once the model has more volumes than its 10 regressors (constant, Legendre drift
    # of order 2, six motion parameters, the block)
    assert [e.index for e in arrived] == list(range(10, VOLUMES)), [e.index for e in arrived]
    assert stat.index == VOLUMES - 1 and stat.name == "t" and stat.data.dtype == np.float16
    # on the volume's grid: same shape and affine (the motion reference is the run's first volume)
    latest = model.latest
    assert latest is not None
    assert stat.data.shape == latest.shape
    np.testing.assert_allclose(stat.affine, latest.affine, atol=1e-3)
    # the project's contrast (on-blocks vs off) peaks inside the simulated activation box
    spec = SynthSpec(volumes=VOLUMES, tr=TR)
    box = default_box(synth_affine(spec), spec.shape)
    peak = np.unravel_index(int(np.argmax(stat.data)), stat.data.shape)
    assert all(lo <= p < hi for p, (lo, hi) in zip(peak, box)), f"peak at {peak}, activation box {box}"
    in_box = np.zeros(stat.data.shape, bool)
    in_box[tuple(slice(lo, hi) for lo, hi in box)] = True
    inside, outside = float(np.median(stat.data[in_box])), float(np.percentile(np.abs(stat.data[~in_box]), 99.0))
    assert inside > 4.0 and inside > 1.5 * outside, (inside, outside)
