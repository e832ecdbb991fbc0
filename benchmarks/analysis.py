"""Analysis speed: motion correction per volume and the incremental GLM update.

``BENCH motion_64`` / ``motion_96``: one volume registered and resliced (trilinear) on a
64x64x36 (3x3x3.5 mm) and a 96x96x66 (2 mm) grid, head moving up to 1 mm / 1 degree,
warm-started as in a run. ``BENCH glm_update``: one volume added to
the incremental GLM (constant, 2 Legendre drifts, 6 motion, 1 task regressor) and its cleaned
signals computed, for 5,000 voxels of a 64x64x36 volume, timed at run length 100 and 1000 to
show the cost does not grow. ``BENCH roi_feedback_volume``: the sample project per volume.
Single-threaded BLAS is requested before numpy loads if possible.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # effective only if numpy is not loaded yet (bench run alone)

import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from benchmarks.stats import Figure, timing  # noqa: E402
from rtcontrol.analysis.drift import DriftBasis  # noqa: E402
from rtcontrol.analysis.glm import RunningModel  # noqa: E402
from rtcontrol.analysis.motion import MotionCorrector  # noqa: E402
from rtcontrol.rigid import grid_centre, params_to_matrix, rotation_matrix  # noqa: E402
from rtcontrol.scanner.volume import Volume  # noqa: E402


def _head(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A smooth ellipsoidal head with internal contrast, about 2/3 of the field of view."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    centre = (np.asarray(shape, dtype=np.float32) - 1) / 2
    r = np.sqrt(sum(((g - c) / (0.36 * n)) ** 2 for g, c, n in zip(grid, centre, shape)))
    head = 1000.0 / (1.0 + np.exp((r - 1.0) * 12.0))
    texture = ndimage.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), 2.0)
    return (head * (1.0 + 2.0 * texture)).astype(np.float32)


def _moving_run(shape: tuple[int, int, int], voxel: tuple[float, float, float], n: int) -> list[Volume]:
    affine = np.eye(4)
    affine[:3, :3] = rotation_matrix(7.0, 0.0, 0.0) @ np.diag(voxel)
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    head = _head(shape)
    c = grid_centre(affine, shape)
    rng = np.random.default_rng(1)
    walk = np.cumsum(rng.normal(0, 0.15, size=(n, 6)), axis=0)
    walk = np.clip(walk, -1.0, 1.0)
    vols = []
    for i in range(n):
        T = params_to_matrix(walk[i], c)
        M = np.linalg.inv(affine) @ np.linalg.inv(T) @ affine  # moved(vox) = head(M vox)
        data = ndimage.affine_transform(head, M, order=1, output=np.float32)
        data += rng.normal(0, 10.0, shape).astype(np.float32)
        vols.append(Volume(data=data, affine=affine, index=i))
    return vols


def _motion(name: str, shape: tuple[int, int, int], voxel: tuple[float, float, float], n: int) -> Figure:
    vols = _moving_run(shape, voxel, n)
    corrector = MotionCorrector()
    corrector.process(vols[0])
    seconds, cpu, iterations = [], [], []
    for v in vols[1:]:
        t0, c0 = time.perf_counter(), time.thread_time()
        result = corrector.process(v)
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        iterations.append(result.iterations)
    fig = timing(name, seconds, f"{shape[0]}x{shape[1]}x{shape[2]}, register + trilinear reslice, one thread")
    # CPU time of this thread: what the work costs when other programs share the cores
    fig.values["cpu_median_ms"] = float(np.median(cpu) * 1e3)
    fig.values["iterations"] = float(np.mean(iterations))
    return fig


def _glm(name: str, run_length: int, n_voxels: int = 5000, samples: int = 60) -> Figure:
    rng = np.random.default_rng(2)
    model = RunningModel(n_voxels, drift=DriftBasis("legendre", 1200, 2), motion=True, n_task=1)
    data = rng.normal(1000, 10, size=(samples, n_voxels))
    volume = rng.normal(1000, 10, size=(64, 64, 36)).astype(np.float32)
    mask = np.zeros(volume.size, dtype=bool)
    mask[rng.choice(volume.size, n_voxels, replace=False)] = True
    mask = mask.reshape(volume.shape)
    for t in range(run_length - samples):  # fill the model up to the run length being timed
        model.glm.add(model.row(t, rng.normal(0, 0.1, 6), [t % 20 >= 10]), data[t % samples])
    seconds, cpu = [], []
    for k in range(samples):
        t = run_length - samples + k
        t0, c0 = time.perf_counter(), time.thread_time()
        y = volume[mask]  # gather the mask from the volume, as a step would
        model.update(t, y, rng.normal(0, 0.1, 6), [t % 20 >= 10])
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    fig = timing(name, seconds, f"{n_voxels} voxels, {model.p} regressors, at run length {run_length}")
    fig.values["cpu_median_ms"] = float(np.median(cpu) * 1e3)
    return fig


def _roi_feedback(name: str, volumes: int = 60) -> Figure:
    """The sample project end to end per volume (motion, quality, ROI, model, PSC) on the simulator's run."""
    from rtcontrol.paths import projects_dir
    from rtcontrol.project import RunContext, resolve_settings
    from rtcontrol.scanner.synth import SynthSpec, generate
    from rtcontrol.worker.projects import load_project_class

    run = generate(SynthSpec(volumes=volumes, seed=0))
    cls = load_project_class(projects_dir() / "roi_feedback")
    ctx = RunContext.local(resolve_settings(cls.settings, {"block_volumes": run.spec.block_volumes}), tr=run.spec.tr)
    project = cls()
    project.start_run(ctx)
    vols = [run.to_volume(t) for t in range(volumes)]
    project.process(vols[0], ctx)
    seconds = []
    for v in vols[1:]:
        t0 = time.perf_counter()
        project.process(v, ctx)
        seconds.append(time.perf_counter() - t0)
    return timing(name, seconds, "projects/roi_feedback per volume, 64x64x36, defaults")


def bench() -> Iterator[Figure]:
    yield _motion("motion_64", (64, 64, 36), (3.0, 3.0, 3.5), 41)
    yield _motion("motion_96", (96, 96, 66), (2.0, 2.0, 2.0), 31)
    short, long = _glm("glm_update", 100), _glm("glm_update", 1000)
    long.values["median_ms_at_100"] = short.values["median_ms"]
    long.values["cpu_median_ms_at_100"] = short.values["cpu_median_ms"]
    long.values["median_ms_at_1000"] = long.values["median_ms"]
    long.note = long.note.replace("at run length 1000", "timed at run length 1000 (and 100: median_ms_at_100)")
    yield long
    yield _roi_feedback("roi_feedback_volume")
