"""The template project, run the way projects/README.md says: without any server."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rtcontrol.paths import projects_dir
from rtcontrol.project import Result, RunContext, resolve_settings
from rtcontrol.scanner.volume import Volume
from rtcontrol.worker.projects import describe_folder, load_project_class

SERIES = "siemens_xa30_enhanced_bold_20vol"


def real_run(reference_root: Path) -> list[Volume]:
    (path,) = (reference_root / SERIES).glob("*.nii.gz")
    img = nib.load(path)
    data = np.asanyarray(img.dataobj)
    tr = float(img.header.get_zooms()[3])
    return [Volume(data=np.ascontiguousarray(data[..., t]), affine=img.affine, run="real", index=t, tr=tr)
            for t in range(data.shape[3])]


@pytest.fixture
def template():
    return load_project_class(projects_dir() / "template")


def test_template_is_found_and_described() -> None:
    info = describe_folder(projects_dir() / "template")
    assert info["name"] == "template" and info["title"] == "Template"
    assert [s["name"] for s in info["settings"]] == ["baseline", "scale"]


def test_template_on_a_real_run(template, reference_root: Path) -> None:
    volumes = real_run(reference_root)
    assert len(volumes) == 20
    project = template()
    ctx = RunContext.local(resolve_settings(template.settings, {"baseline": 4}), tr=volumes[0].tr)
    project.start_run(ctx)
    results = [Result.of(project.process(v, ctx)) for v in volumes]
    project.end_run(ctx)
    assert [r.feedback for r in results[:4]] == [None] * 4
    fb = np.array([r.feedback for r in results[4:]])
    assert np.all((fb >= 0) & (fb <= 1))
    # a stable real EPI run: the global mean stays within a fraction of a percent of baseline
    assert np.all(np.abs(fb - 0.5) < 0.25)
    means = [r.metrics["global_mean"] for r in results]
    assert means[0] == pytest.approx(float(volumes[0].data.mean()), rel=1e-5)


def test_template_follows_a_known_signal_change(template, reference_root: Path) -> None:
    volumes = real_run(reference_root)[:10]
    project = template()
    ctx = RunContext.local(resolve_settings(template.settings, {"baseline": 5, "scale": 2.0}))
    project.start_run(ctx)
    out = []
    for v in volumes:
        if v.index >= 5:  # +1 % everywhere -> 0.5 + 1 / (2 * 2) = 0.75 (up to the run's own drift)
            v = Volume(data=(v.data.astype(np.float32) * 1.01), affine=v.affine, index=v.index)
        out.append(Result.of(project.process(v, ctx)).feedback)
    assert all(abs(f - 0.75) < 0.1 for f in out[5:]), out
    assert all(f > 0.6 for f in out[5:])
