"""Helpers for scanner tests: a watcher sink, files written as a scanner does, dcm2niix references."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rtcontrol.scanner.volume import Volume
from rtcontrol.scanner.watcher import ScanWatcher, WatchEvent
from tests.support.wait import wait_until


def series_files(dicom_root: Path, name: str) -> list[Path]:
    skip = ("LICENSE.source",)
    return sorted(p for p in (dicom_root / name).iterdir() if p.name not in skip and not p.name.startswith("README"))


class Sink:
    """Collects what the watcher hands on."""

    def __init__(self) -> None:
        self.volumes = []
        self.events: list[WatchEvent] = []

    def kinds(self, kind: str) -> list[WatchEvent]:
        return [e for e in self.events if e.kind == kind]

    async def until(self, predicate, timeout: float = 10.0) -> None:
        """Wait until ``predicate()``; on a timeout say what the watcher had delivered."""
        await wait_until(predicate, timeout,
                         lambda: f"{len(self.volumes)} volumes, events {[e.message for e in self.events]}")


def make_watcher(folder: Path, sink: Sink, mode: str, **kw) -> ScanWatcher:
    return ScanWatcher(folder, sink.volumes.append, sink.events.append, polling=(mode == "polling"), **kw)


def put(dst: Path, data: bytes) -> None:
    with open(dst, "wb") as f:
        f.write(data)


async def write(dst: Path, data: bytes) -> None:
    await asyncio.to_thread(put, dst, data)


def _reference(reference_root: Path, series: str) -> tuple[nib.Nifti1Image, dict]:
    folder = reference_root / series
    nii = next(folder.glob("*.nii.gz"))
    ref = json.loads((folder / "reference.json").read_text())
    (_, out), = ref["outputs"].items()
    return nib.load(nii), out


def assert_same_world(vols: list[Volume], ref: nib.Nifti1Image) -> None:
    """Each of our voxels sits on a reference voxel centre with the same real value."""
    ref_real = np.asarray(ref.dataobj, dtype=np.float64)  # nibabel applies scl_slope/inter
    if ref_real.ndim == 3:
        ref_real = ref_real[..., None]
    assert len(vols) == ref_real.shape[3]
    first = vols[0]
    assert sorted(first.shape) == sorted(ref_real.shape[:3])
    assert np.allclose(sorted(first.voxel_size), sorted(ref.header.get_zooms()[:3]), atol=1e-4)
    ijk = np.indices(first.shape).reshape(3, -1).T
    world = first.world_coords(ijk)
    inv = np.linalg.inv(ref.affine)
    rijk = world @ inv[:3, :3].T + inv[:3, 3]
    nearest = np.rint(rijk)
    # position error in mm at every voxel (corners included): the reference voxel centre vs ours
    err_mm = np.linalg.norm((rijk - nearest) @ ref.affine[:3, :3].T, axis=1)
    assert err_mm.max() < 1e-3, f"voxel centres differ by up to {err_mm.max():.2e} mm"
    r = nearest.astype(int)
    assert (r >= 0).all() and (r < np.array(ref_real.shape[:3])).all()
    # a permutation: every reference voxel is hit exactly once
    assert len(np.unique(np.ravel_multi_index(r.T, ref_real.shape[:3]))) == len(r)
    for v in vols:
        assert v.shape == first.shape and np.allclose(v.affine, first.affine, atol=1e-6)
        ours = v.scaled(np.float64)[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
        theirs = ref_real[r[:, 0], r[:, 1], r[:, 2], v.index]
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-3, err_msg=f"volume {v.index}")


def _dcm2niix() -> str:
    exe = Path(sys.executable).with_name("dcm2niix")
    if exe.exists():
        return str(exe)
    try:
        import dcm2niix  # type: ignore[import-untyped]

        return str(dcm2niix.bin)
    except ImportError:
        found = shutil.which("dcm2niix")
        if not found:
            pytest.skip("dcm2niix (PyPI package) is not installed")
        return found
