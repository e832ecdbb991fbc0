"""roi_feedback on the simulator's run: the feedback must follow the known activation blocks."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rtcontrol.paths import projects_dir
from rtcontrol.project import Result, RunContext, resolve_settings
from rtcontrol.scanner.synth import SynthSpec, generate
from rtcontrol.worker.projects import load_project_class

FOLDER = projects_dir() / "roi_feedback"


@pytest.fixture(scope="module")
def synth_run():
    return generate(SynthSpec(volumes=80, seed=4, motion_mm=1.5))


def run_project(run, **settings) -> tuple[np.ndarray, list[dict]]:
    cls = load_project_class(FOLDER)
    ctx = RunContext.local(resolve_settings(cls.settings, settings), tr=run.spec.tr)
    project = cls()
    project.start_run(ctx)
    feedback, metrics = [], []
    for t in range(run.spec.volumes):
        result = Result.of(project.process(run.to_volume(t), ctx))
        feedback.append(np.nan if result.feedback is None else result.feedback)
        metrics.append(result.metrics)
    project.end_run(ctx)
    return np.array(feedback), metrics


def world_box(run) -> tuple[list[float], list[float]]:
    corners = np.asarray(run.truth["activation"]["box_world_corners"])
    return corners.min(axis=0).tolist(), corners.max(axis=0).tolist()


def check_recovers_blocks(run, feedback: np.ndarray, min_r: float) -> None:
    on = np.asarray(run.truth["activation"]["timecourse"]) > 0
    ok = ~np.isnan(feedback)
    assert ok.sum() >= run.spec.volumes - 10  # feedback from the end of the baseline on
    r = np.corrcoef(feedback[ok], on[ok])[0, 1]
    assert r >= min_r, f"correlation of feedback with the true blocks is {r:.2f}"
    assert feedback[ok & on].mean() > feedback[ok & ~on].mean() + 0.2
    assert np.all((feedback[ok] >= 0) & (feedback[ok] <= 1))


def test_world_box_with_known_protocol(synth_run) -> None:
    """Defaults (motion correction, drift + motion regressors) plus the protocol's block length."""
    lo, hi = world_box(synth_run)
    feedback, metrics = run_project(synth_run, roi_lo=lo, roi_hi=hi, expected_volumes=80,
                                    block_volumes=synth_run.spec.block_volumes)
    check_recovers_blocks(synth_run, feedback, 0.9)
    last = metrics[-1]
    for key in ("roi_mean", "psc", "feedback", "fd", "dvars", "tsnr_median", "spike", "tx", "ty", "tz", "rx", "ry",
                "rz"):
        assert key in last and np.isfinite(last[key]), key
    # the motion the project saw is the simulator's (rotation about S is noise-limited in this
    # phantom at 1% noise; tests/analysis/test_motion.py checks the accuracy itself)
    truth = np.asarray(synth_run.truth["motion"]["params"][-1])
    seen = np.array([last[k] for k in ("tx", "ty", "tz", "rx", "ry", "rz")])
    np.testing.assert_allclose(seen[:3], truth[:3], atol=0.05)
    np.testing.assert_allclose(seen[3:], truth[3:], atol=0.15)


def test_voxel_box_without_protocol_knowledge(synth_run) -> None:
    """No block timing given: drift model only (motion regressors are left out by default)."""
    (i0, i1), (j0, j1), (k0, k1) = synth_run.truth["activation"]["box_voxels"]
    feedback, _ = run_project(synth_run, roi_kind="box_voxel", roi_lo=[i0, j0, k0], roi_hi=[i1 - 1, j1 - 1, k1 - 1],
                              expected_volumes=80)
    check_recovers_blocks(synth_run, feedback, 0.6)


def test_mask_file_in_another_space(synth_run, tmp_path: Path) -> None:
    """A 2 mm axial mask of the activation box, resampled once to the run's oblique grid."""
    lo, hi = world_box(synth_run)
    A = np.diag([2.0, 2.0, 2.0, 1.0])
    A[:3, 3] = [-100.0, -120.0, -60.0]
    ijk = np.indices((100, 110, 80)).reshape(3, -1).T
    xyz = ijk * 2.0 + A[:3, 3]
    # the true box, in world space: voxels of the run grid inside it
    inv = np.linalg.inv(synth_run.affine)
    run_ijk = xyz @ inv[:3, :3].T + inv[:3, 3]
    inside = np.ones(len(xyz), dtype=bool)
    for axis, (a, b) in enumerate(synth_run.truth["activation"]["box_voxels"]):
        inside &= (run_ijk[:, axis] >= a - 0.5) & (run_ijk[:, axis] <= b - 0.5)
    mask = np.where(inside, 3, 0).reshape(100, 110, 80).astype(np.uint8)
    path = tmp_path / "roi_2mm.nii.gz"
    nib.save(nib.Nifti1Image(mask, A), path)
    feedback, _ = run_project(synth_run, roi_kind="mask", roi_mask=str(path), roi_label=3, expected_volumes=80,
                              block_volumes=synth_run.spec.block_volumes)
    check_recovers_blocks(synth_run, feedback, 0.9)


def test_bad_settings_are_refused(synth_run) -> None:
    cls = load_project_class(FOLDER)
    project = cls()
    with pytest.raises(ValueError, match="psc_max"):
        project.start_run(RunContext.local(resolve_settings(cls.settings, {"psc_min": 2.0, "psc_max": 1.0})))
    with pytest.raises(ValueError, match="no roi_mask"):
        project.start_run(RunContext.local(resolve_settings(cls.settings, {"roi_kind": "mask"})))
    ctx = RunContext.local(resolve_settings(cls.settings, {"roi_lo": [500, 500, 500], "roi_hi": [510, 510, 510]}))
    project.start_run(ctx)
    with pytest.raises(ValueError, match="empty on the run's grid"):
        project.process(synth_run.to_volume(0), ctx)


def test_kalman_plugin_as_post_step(synth_run) -> None:
    lo, hi = world_box(synth_run)
    feedback, metrics = run_project(synth_run, roi_lo=lo, roi_hi=hi, expected_volumes=80,
                                    block_volumes=synth_run.spec.block_volumes, post_steps="kalman")
    check_recovers_blocks(synth_run, feedback, 0.85)
    raw = np.array([m.get("psc_raw", np.nan) for m in metrics])
    smoothed = np.array([m.get("psc", np.nan) for m in metrics])
    ok = ~np.isnan(raw)
    assert np.abs(np.diff(smoothed[ok])).mean() < np.abs(np.diff(raw[ok])).mean()


def test_unknown_post_step_is_refused() -> None:
    cls = load_project_class(FOLDER)
    with pytest.raises(ValueError, match="no plugin step named nosuch"):
        cls().start_run(RunContext.local(resolve_settings(cls.settings, {"post_steps": "nosuch"})))


def test_a_corrupt_volume_is_skipped_and_the_run_goes_on(synth_run) -> None:
    from rtcontrol.scanner.volume import Volume

    lo, hi = world_box(synth_run)
    cls = load_project_class(FOLDER)
    ctx = RunContext.local(resolve_settings(cls.settings, {"roi_lo": lo, "roi_hi": hi, "baseline_volumes": 4}), tr=2.0)
    project = cls()
    project.start_run(ctx)
    results = []
    for t in range(8):
        vol = synth_run.to_volume(t)
        if t == 5:
            vol = Volume(data=np.zeros(vol.shape, np.uint16), affine=vol.affine, index=5)
        results.append(Result.of(project.process(vol, ctx)))
    assert results[5].feedback is None and results[5].metrics["motion_ok"] == 0.0
    assert results[6].feedback is not None and results[6].metrics["motion_ok"] == 1.0
    assert abs(results[6].metrics["tx"] - synth_run.truth["motion"]["params"][6][0]) < 0.05


def test_the_worker_can_describe_it() -> None:
    import json

    from rtcontrol.worker.projects import describe_folder

    info = describe_folder(FOLDER)
    assert info["name"] == "roi_feedback"
    names = {s["name"] for s in info["settings"]}
    assert {"roi_kind", "roi_lo", "roi_hi", "roi_mask", "baseline_volumes", "psc_min", "psc_max"} <= names
    json.dumps(info)  # travels to the console as JSON


def test_defaults_cover_the_simulators_activation_box() -> None:
    """The default ROI is the simulator's activation box: with it (and the block length) feedback follows the blocks."""
    run = generate(SynthSpec(volumes=60, seed=0))
    feedback, _ = run_project(run, block_volumes=run.spec.block_volumes)
    check_recovers_blocks(run, feedback, 0.8)


@pytest.mark.parametrize("series", [
    "ge_epi_nih_10vol", "philips_epi_magdeburg", "siemens_mosaic_ax_35sl",
    "siemens_mosaic_ep2d_int_6vol", "siemens_mosaic_ep2d_int_HF_6vol", "siemens_xa30_enhanced_bold_20vol",
])  # fmt: skip
def test_runs_on_every_real_series(dicom_root: Path, series: str) -> None:
    """Every scanner's geometry (9 to 36 slices, oblique, head-first/feet-first): feedback in 0..1."""
    from rtcontrol.rigid import grid_centre
    from rtcontrol.scanner.series import read_series

    vols = next(iter(read_series(dicom_root / series).values()))
    c = grid_centre(vols[0].affine, vols[0].shape)
    cls = load_project_class(FOLDER)
    settings = {"roi_lo": (c - 15).tolist(), "roi_hi": (c + 15).tolist(), "baseline_volumes": 1, "drift": "none"}
    ctx = RunContext.local(resolve_settings(cls.settings, settings), tr=vols[0].tr)
    project = cls()
    project.start_run(ctx)
    results = [Result.of(project.process(v, ctx)) for v in vols]
    assert results[0].feedback is not None and all(0.0 <= r.feedback <= 1.0 for r in results)
    for r in results:
        assert all(np.isfinite(r.metrics[k]) for k in ("roi_mean", "psc", "fd", "dvars", "tx", "rz")), r.metrics


def test_motion_regressors_auto_follows_the_task_model() -> None:
    import sys

    cls = load_project_class(FOLDER)
    use = sys.modules[cls.__module__].use_motion_regressors
    base = resolve_settings(cls.settings, {})
    assert use(base) is False
    assert use({**base, "block_volumes": 10}) is True
    assert use({**base, "motion_regressors": "on"}) is True
    assert use({**base, "block_volumes": 10, "motion_regressors": "off"}) is False
    assert use({**base, "block_volumes": 10, "motion_correction": False}) is False


def test_dummy_scans_are_skipped_on_the_real_mosaic(dicom_root: Path) -> None:
    """ep2d_Int's first two volumes are not at steady state: with skip_volumes = 2 they are ignored,
    volume 2 is the motion reference and the baseline, and motion stays small."""
    from rtcontrol.rigid import grid_centre
    from rtcontrol.scanner.series import read_series

    vols = next(iter(read_series(dicom_root / "siemens_mosaic_ep2d_int_6vol").values()))
    c = grid_centre(vols[0].affine, vols[0].shape)
    cls = load_project_class(FOLDER)
    settings = {"roi_lo": (c - 20).tolist(), "roi_hi": (c + 20).tolist(), "skip_volumes": 2, "baseline_volumes": 1}
    ctx = RunContext.local(resolve_settings(cls.settings, settings), tr=vols[0].tr)
    project = cls()
    project.start_run(ctx)
    results = [Result.of(project.process(v, ctx)) for v in vols]
    assert [r.feedback is None for r in results] == [True, True, False, False, False, False]
    assert results[0].metrics == {} and abs(results[2].metrics["tx"]) < 1e-6
    for r in results[3:]:
        assert max(abs(r.metrics[k]) for k in ("tx", "ty", "tz", "rx", "ry", "rz")) < 1.0
        assert abs(r.metrics["psc"]) < 5.0  # the signal still settles by about 2% after volume 2


def test_run_offline_on_a_real_series_gives_what_a_run_by_hand_gives(dicom_root: Path) -> None:
    """run_offline loads the project as the worker does and feeds the series' volumes in order: the same
    feedback and metrics per volume as the step-by-step run above (dummy scans skipped, then feedback)."""
    from rtcontrol.project import run_offline
    from rtcontrol.rigid import grid_centre
    from rtcontrol.scanner.series import read_series

    folder = dicom_root / "siemens_mosaic_ep2d_int_6vol"
    vols = next(iter(read_series(folder).values()))
    c = grid_centre(vols[0].affine, vols[0].shape)
    settings = {"roi_lo": (c - 20).tolist(), "roi_hi": (c + 20).tolist(), "skip_volumes": 2, "baseline_volumes": 1}
    results = run_offline(FOLDER, folder, settings)
    assert [r.feedback is None for r in results] == [True, True, False, False, False, False]
    cls = load_project_class(FOLDER)
    ctx = RunContext.local(resolve_settings(cls.settings, settings), tr=vols[0].tr)
    project = cls()
    project.start_run(ctx)
    by_hand = [Result.of(project.process(v, ctx)) for v in vols]
    assert [r.feedback for r in results] == [r.feedback for r in by_hand]
    np.testing.assert_equal([r.metrics for r in results], [r.metrics for r in by_hand])  # NaN where undefined yet
    with pytest.raises(ValueError, match="unknown setting"):
        run_offline(FOLDER, folder, {"no_such_setting": 1})
