"""Steps compose into a pipeline; plugins are found in a folder, broken ones are reported."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from rtcontrol.analysis import plugins as plugin_mod
from rtcontrol.analysis.plugins import DisplayInfo, discover
from rtcontrol.analysis.roi import RoiSpec
from rtcontrol.analysis.steps import Frame, GlmStep, MotionStep, Pipeline, QualityStep, RoiMeanStep, SmoothStep
from rtcontrol.paths import plugins_dir
from rtcontrol.scanner.synth import SynthSpec, generate


def test_pipeline_on_a_synthetic_run() -> None:
    run = generate(SynthSpec(volumes=6, seed=2, motion_mm=1.0))
    (i0, i1), (j0, j1), (k0, k1) = run.truth["activation"]["box_voxels"]
    pipeline = Pipeline([
        MotionStep(), QualityStep(), SmoothStep(fwhm_mm=4.0),
        RoiMeanStep(RoiSpec.box_voxel([i0, j0, k0], [i1 - 1, j1 - 1, k1 - 1], name="v1")),
    ])  # fmt: skip
    frames = [pipeline.process(run.to_volume(t)) for t in range(6)]
    last = frames[-1]
    for key in ("tx", "ty", "tz", "rx", "ry", "rz", "fd", "dvars", "tsnr_median", "spike", "v1_mean"):
        assert key in last.metrics and math.isfinite(last.metrics[key]), key
    truth = np.asarray(run.truth["motion"]["params"][-1])
    np.testing.assert_allclose(last.values["motion"][:3], truth[:3], atol=0.05)
    assert last.data.dtype == np.float32 and last.data.shape == run.spec.shape
    assert 100 < last.metrics["v1_mean"] < 2000


def test_settings_of_steps_are_checked() -> None:
    with pytest.raises(ValueError, match="fwhm_mm"):
        SmoothStep(fwhm_mm=-1)
    with pytest.raises(ValueError, match="unknown setting"):
        QualityStep(colour="red")


def test_the_shipped_plugins_folder_loads_the_kalman_example() -> None:
    registry = discover()
    assert registry.errors == []
    assert "kalman" in registry.steps
    assert registry.sources["kalman"] == str(plugins_dir() / "kalman_filter.py")
    assert {"motion", "quality", "smooth", "roi_mean"} <= set(registry.steps)


def test_kalman_example_smooths_and_clips_spikes() -> None:
    kalman = discover().create_step("kalman", process_var=0.01, measurement_var=0.25)
    rng = np.random.default_rng(0)
    truth = np.r_[np.zeros(40), np.full(40, 2.0)]
    raw = truth + rng.normal(0, 0.5, truth.size)
    raw[60] += 15.0  # a spike
    out = []
    for v in [float("nan"), *raw]:
        frame = Frame(volume=None, data=np.zeros((1, 1, 1)), affine=np.eye(4), values={"psc": v})  # type: ignore[arg-type]
        kalman.process(frame)
        out.append(frame.values["psc"])
    assert math.isnan(out[0])  # a NaN (baseline still running) passes through
    out = np.array(out[1:])
    assert np.abs(out - truth)[20:40].std() < 0.5 * np.abs(raw - truth)[20:40].std()  # smoother
    assert abs(out[60] - truth[60]) < 3.0  # the 15-unit spike moves it only a little
    assert abs(out[75:].mean() - 2.0) < 0.3  # it follows the level change


def test_folder_plugins_register_steps_and_displays_and_report_broken_ones(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text(
        "from rtcontrol.analysis.steps import Step\n"
        "from rtcontrol.analysis.plugins import DisplayInfo\n"
        "class Doubler(Step):\n"
        "    name = 'doubler'\n"
        "    def process(self, frame):\n"
        "        frame.data = frame.data * 2\n"
        "DISPLAYS = [DisplayInfo('gauge', 'a round gauge', 'gauges.round:Gauge')]\n"
    )
    pkg = tmp_path / "pkg_plugin"
    pkg.mkdir()
    (pkg / "helper.py").write_text("LABEL = 'nothing'\n")
    (pkg / "__init__.py").write_text(
        "from rtcontrol.analysis.steps import Step\n"
        "from .helper import LABEL\n"
        "class Nothing(Step):\n"
        "    name = LABEL\n"
        "    def process(self, frame):\n"
        "        pass\n"
        "def register(registry):\n"
        "    registry.add_step(Nothing, 'pkg')\n"
    )
    (tmp_path / "broken.py").write_text("import does_not_exist_anywhere\n")
    (tmp_path / "_private.py").write_text("raise SystemExit('must not be imported')\n")
    registry = discover([tmp_path], entry_points=False)
    assert {"doubler", "nothing"} <= set(registry.steps)
    assert registry.displays["gauge"] == DisplayInfo("gauge", "a round gauge", "gauges.round:Gauge")
    assert len(registry.errors) == 1 and registry.errors[0].source.endswith("broken.py")
    assert "does_not_exist_anywhere" in registry.errors[0].message
    with pytest.raises(KeyError, match="no processing step named 'tripler'"):
        registry.create_step("tripler")


def test_entry_points_are_loaded(monkeypatch, tmp_path: Path) -> None:
    class FakeEntryPoint:
        name, value = "extra", "extra_mod:register"

        def load(self):
            def register(registry):
                registry.add_display(DisplayInfo("bar", "a bar", "bars:Bar"), "extra")
            return register

    monkeypatch.setattr(plugin_mod.metadata, "entry_points",
                        lambda group: [FakeEntryPoint()] if group == plugin_mod.ENTRY_POINT_GROUP else [])
    registry = discover([tmp_path])
    assert "bar" in registry.displays


def test_bad_display_factory_is_refused() -> None:
    with pytest.raises(ValueError, match="module:callable"):
        DisplayInfo("x", "y", "no_colon")


def test_glm_step_finds_the_activation_box() -> None:
    run = generate(SynthSpec(volumes=60, seed=5, motion_mm=1.0, activation_pct=3.0))
    glm = GlmStep(expected_volumes=60, block_volumes=run.spec.block_volumes)
    pipeline = Pipeline([MotionStep(), glm])
    for t in range(run.spec.volumes):
        frame = pipeline.process(run.to_volume(t))
    t_map = frame.values["t_map"]
    box = tuple(slice(lo, hi) for lo, hi in run.truth["activation"]["box_voxels"])
    inside = t_map[box]
    outside = np.ones(t_map.shape, dtype=bool)
    outside[box] = False
    assert np.median(inside) > 5.0
    assert np.percentile(np.abs(t_map[outside & (t_map != 0)]), 99) < 5.0
    assert frame.metrics["glm_t_max"] == pytest.approx(float(t_map.max()))
    with pytest.raises(ValueError, match="needs the motion step"):
        Pipeline([GlmStep()]).process(run.to_volume(0))


def test_default_discovery_adds_the_workers_plugin_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A project's own ``discover()`` (roi_feedback's post_steps) sees the worker's --plugins folders via the
    environment."""
    (tmp_path / "halver.py").write_text(
        "from rtcontrol.analysis.steps import Step\n"
        "class Halver(Step):\n"
        "    name = 'halver_env_test'\n"
        "    def process(self, frame):\n"
        "        pass\n"
    )
    assert "halver_env_test" not in discover(entry_points=False).steps
    monkeypatch.setenv(plugin_mod.PLUGINS_ENV, str(tmp_path))
    registry = discover(entry_points=False)
    assert "halver_env_test" in registry.steps and "kalman" in registry.steps  # the install's plugins/ still first
    summary = registry.summary()
    assert {(p["name"], p["kind"]) for p in summary["plugins"]} >= {("halver_env_test", "step"), ("kalman", "step")}
    assert summary["errors"] == []


def test_glm_step_without_cleaning_gives_the_same_t_map_and_leaves_the_data() -> None:
    """roi_feedback's t-map path (clean=False) skips the cleaned data but not the statistics."""
    run = generate(SynthSpec(volumes=30, seed=2, motion_mm=0.0, shape=(24, 24, 12)))
    clean = GlmStep(expected_volumes=30, block_volumes=5, motion_regressors=False)
    plain = GlmStep(expected_volumes=30, block_volumes=5, motion_regressors=False, clean=False)
    for t in range(run.spec.volumes):
        a, b = Frame.of(run.to_volume(t)), Frame.of(run.to_volume(t))
        before = b.data.copy()
        clean.process(a)
        plain.process(b)
        np.testing.assert_array_equal(b.data, before)
    np.testing.assert_allclose(b.values["t_map"], a.values["t_map"], rtol=1e-4, atol=1e-4)
    assert np.abs(b.values["t_map"]).max() > 0
