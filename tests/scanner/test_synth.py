"""The simulator: ground truth that holds, and DICOM that dcm2niix (and our reader) read as intended."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

with warnings.catch_warnings():  # nibabel calls its DICOM readers experimental; we use only the CSA parser
    warnings.simplefilter("ignore", UserWarning)
    from nibabel.nicom import csareader

from rtcontrol.cli import main as cli_main
from rtcontrol.rigid import params_to_matrix
from rtcontrol.scanner.synth import SynthSpec, generate, write_run

SMALL = dict(volumes=6, shape=(32, 30, 11), voxel_mm=(4.0, 4.0, 5.0), block_volumes=2)


def index_map(src_affine: np.ndarray, dst_affine: np.ndarray) -> np.ndarray:
    """The integer voxel mapping src (i, j, k) -> dst (i, j, k) when both grids cover the same points."""
    m = np.linalg.inv(dst_affine) @ src_affine
    assert np.allclose(m, np.rint(m), atol=2e-3), f"grids differ beyond a permutation/flip:\n{m}"
    return np.rint(m)


def same_in_world(a_data, a_affine, b_data, b_affine) -> None:
    """Assert two 3-D/4-D arrays hold the same values at the same world points."""
    m = index_map(a_affine, b_affine)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in a_data.shape[:3]], indexing="ij"), -1).reshape(-1, 3)
    dst = (ijk @ m[:3, :3].T + m[:3, 3]).astype(int)
    assert (dst >= 0).all() and (dst < np.array(b_data.shape[:3])).all(), "grids do not overlap exactly"
    a = a_data.reshape(len(ijk), *a_data.shape[3:])
    b = b_data[dst[:, 0], dst[:, 1], dst[:, 2]]
    np.testing.assert_array_equal(a, b)


def test_deterministic_for_a_seed():
    a, b = generate(SynthSpec(**SMALL, seed=3)), generate(SynthSpec(**SMALL, seed=3))
    c = generate(SynthSpec(**SMALL, seed=4))
    np.testing.assert_array_equal(a.data, b.data)
    assert a.truth == b.truth
    assert not np.array_equal(a.data, c.data)
    assert a.data.dtype == np.uint16 and a.data.shape == (32, 30, 11, 6)


def test_default_spec_geometry():
    spec = SynthSpec()
    assert spec.shape == (64, 64, 36) and spec.tr == 2.0
    run = generate(SynthSpec(volumes=1))
    normal = run.affine[:3, 2] / np.linalg.norm(run.affine[:3, 2])
    tilt = np.degrees(np.arccos(abs(normal[2])))
    assert 2.0 < tilt < 20.0, "the default grid should be oblique by a few degrees"
    assert np.allclose(np.linalg.norm(run.affine[:3, :3], axis=0), (3.0, 3.0, 3.5))


def test_activation_is_exactly_the_block_design_in_the_box():
    spec = SynthSpec(**SMALL, motion_mm=0, noise_pct=0, drift_pct=0, activation_pct=5.0)
    run = generate(spec)
    act = run.truth["activation"]
    box = tuple(slice(lo, hi) for lo, hi in act["box_voxels"])
    on = [t for t, a in enumerate(act["timecourse"]) if a > 0]
    off = [t for t, a in enumerate(act["timecourse"]) if a == 0]
    assert act["onsets_volumes"] == [2] and act["durations_volumes"] == [2]
    assert act["onsets_s"] == [4.0] and on == [2, 3]
    base = run.data[..., off[0]].astype(float)
    for t in on:
        vol = run.data[..., t].astype(float)
        inside = base[box] > 200  # brain voxels in the box
        assert inside.mean() > 0.8, "the activation box should lie in the brain"
        ratio = vol[box][inside] / base[box][inside]
        assert np.allclose(ratio, 1.05, atol=0.003)  # only uint16 rounding in the way
        outside = np.ones(vol.shape, bool)
        outside[box] = False
        np.testing.assert_array_equal(vol[outside], base[outside])


def test_motion_moves_the_head_as_recorded():
    spec = SynthSpec(volumes=5, shape=(48, 48, 30), voxel_mm=(4.0, 4.0, 4.0), motion_mm=3.0, noise_pct=0,
                     drift_pct=0, activation_pct=0, seed=1)  # fmt: skip
    run = generate(spec)
    params = np.array(run.truth["motion"]["params"])
    centre = np.array(run.truth["motion"]["centre"])
    assert params.shape == (5, 6) and np.all(params[0] == 0)
    assert np.abs(params[:, :3]).max() <= 3.0 + 1e-9 and np.abs(params[:, :3]).max() > 1.0

    def centre_of_mass(vol: np.ndarray) -> np.ndarray:
        w = vol.astype(float)
        ijk = np.stack(np.meshgrid(*[np.arange(n) for n in vol.shape], indexing="ij"), -1)
        com = (ijk * w[..., None]).reshape(-1, 3).sum(0) / w.sum()
        return run.affine[:3, :3] @ com + run.affine[:3, 3]

    ref = centre_of_mass(run.volume(0))
    for t in range(1, spec.volumes):
        expected = (params_to_matrix(params[t], centre) @ np.append(ref, 1))[:3]
        assert np.linalg.norm(centre_of_mass(run.volume(t)) - expected) < 0.1, f"volume {t}"


def test_noise_and_drift_follow_the_spec():
    spec = SynthSpec(**SMALL, motion_mm=0, activation_pct=0, noise_pct=2.0, drift_pct=4.0)
    run = generate(spec)
    quiet = generate(SynthSpec(**SMALL, motion_mm=0, activation_pct=0, noise_pct=0, drift_pct=4.0))
    resid = run.data.astype(float) - quiet.data.astype(float)
    sd = resid[run.data[..., 0] > 50].std()
    assert abs(sd / run.truth["noise_sd"] - 1) < 0.1
    assert run.truth["drift"][0] == 1.0 and run.truth["drift"][-1] == pytest.approx(1.04)


def test_write_run_is_mosaic_dicom_with_csa(tmp_path: Path):
    spec = SynthSpec(**SMALL)
    out = write_run(spec, tmp_path / "run")
    truth = json.loads((out / "truth.json").read_text())
    files = sorted(out.glob("*.dcm"))
    assert [f.name for f in files] == truth["files"] and len(files) == 6
    ds = pydicom.dcmread(files[0])
    assert "MOSAIC" in ds.ImageType and ds.Manufacturer == "SIEMENS"
    assert (ds.Rows, ds.Columns) == (30 * 4, 32 * 4)  # 11 slices in a 4x4 grid
    csa = csareader.get_csa_header(ds, "image")
    assert csareader.get_n_mosaic(csa) == 11
    normal_lps = np.array(truth["affine"])[:3, 2] * [-1, -1, 1] / 5.0  # RAS -> LPS, unit length
    assert np.allclose(csareader.get_slice_normal(csa), normal_lps, atol=1e-6)
    times = csa["tags"]["MosaicRefAcqTimes"]["items"]
    assert np.allclose(np.array(times) / 1000.0, truth["slice_timing"], atol=1e-6)


@pytest.mark.parametrize("dtype", ["uint16", "int16"])
def test_dcm2niix_reads_the_intended_world_image(tmp_path: Path, dtype: str):
    exe = shutil.which("dcm2niix") or str(Path(sys.executable).parent / "dcm2niix")
    spec = SynthSpec(**SMALL, dtype=dtype, seed=5, oblique_deg=11.0)
    run = generate(spec)
    src = write_run(spec, tmp_path / "dicom", run=run)
    out = tmp_path / "nii"
    out.mkdir()
    proc = subprocess.run([exe, "-z", "n", "-f", "conv", "-o", str(out), str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    img = nib.load(out / "conv.nii")
    sidecar = json.loads((out / "conv.json").read_text())
    assert img.shape == (32, 30, 11, 6)
    assert sidecar["RepetitionTime"] == pytest.approx(spec.tr)
    assert np.allclose(sidecar["SliceTiming"], run.slice_times, atol=1e-4)
    assert np.allclose(img.affine, img.header.get_qform(), atol=1e-4)
    same_in_world(run.data.astype(np.int64), run.affine, np.asarray(img.dataobj).astype(np.int64), img.affine)


def test_reader_reads_the_synthetic_mosaic_back_exactly(tmp_path: Path):
    from rtcontrol.scanner import reader

    spec = SynthSpec(**SMALL, seed=2)
    run = generate(spec)
    src = write_run(spec, tmp_path, run=run)
    for t, name in enumerate(sorted(p.name for p in src.glob("*.dcm"))):
        vol = reader.read_file(src / name)
        assert not isinstance(vol, list)
        same_in_world(run.volume(t).astype(np.int64), run.affine, vol.data.astype(np.int64), vol.affine)
        assert vol.tr == pytest.approx(spec.tr)
        assert np.allclose(vol.slice_timing, run.slice_times, atol=1e-5)


def test_cli_writes_a_run(tmp_path: Path, capsys):
    rc = cli_main(["synth", str(tmp_path / "s"), "--volumes", "3", "--shape", "16,16,5", "--seed", "9"])
    assert rc == 0
    truth = json.loads((tmp_path / "s" / "truth.json").read_text())
    assert truth["shape"] == [16, 16, 5] and truth["volumes"] == 3 and len(truth["files"]) == 3
    assert "wrote 3 volumes" in capsys.readouterr().out


def test_cli_rejects_a_bad_shape(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["synth", str(tmp_path), "--shape", "16,16"])
    assert exc.value.code != 0
    assert "three sizes" in capsys.readouterr().err
