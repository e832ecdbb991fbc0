"""The project API: what experiment code in ``projects/`` is written against.

A project is a folder ``projects/<name>/`` holding ``project.py`` that defines a subclass of
:class:`Project` (the first one found is used). The worker loads it in a fresh process per
run, calls :meth:`Project.start_run` once, :meth:`Project.process` once per volume and
:meth:`Project.end_run` at the end. Everything here is plain Python, so a project is tested
without any server, on a recorded series::

    results = run_offline("projects/my_project", "path/to/series", {"threshold": 0.5})
    feedback = [r.feedback for r in results]

or step by step::

    ctx = RunContext.local(settings={"threshold": 0.5})
    project = MyProject()
    project.start_run(ctx)
    result = project.process(volume, ctx)
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import re
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from rtcontrol.errors import RtcontrolError
from rtcontrol.scanner.volume import Volume

__all__ = [
    "T_MAP", "Block", "Design", "Project", "ProjectError", "Result", "RunContext", "Setting", "Volume",
    "load_project_class",
    "resolve_settings", "run_offline",
]

SETTING_TYPES = ("float", "int", "str", "bool", "choice", "path", "vector3")


@dataclass(frozen=True)
class Setting:
    """One run setting a project declares; the console draws a form field from it."""

    name: str
    default: Any
    type: str = "float"
    help: str = ""
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def __post_init__(self) -> None:
        if self.type not in SETTING_TYPES:
            raise ValueError(f"setting {self.name!r}: unknown type {self.type!r} (one of {SETTING_TYPES})")
        if self.type == "choice" and not self.choices:
            raise ValueError(f"setting {self.name!r}: a choice needs choices")

    def coerce(self, value: Any) -> Any:
        """Check and convert a value from the console (TOML/JSON) to this setting's type."""
        try:
            if self.type == "float":
                value = float(value)
            elif self.type == "int":
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError("not a whole number")
                value = int(value)
            elif self.type == "bool":
                if not isinstance(value, bool):
                    raise ValueError("not true or false")
            elif self.type in ("str", "path"):
                value = str(value)
            elif self.type == "vector3":
                value = [float(v) for v in value]
                if len(value) != 3:
                    raise ValueError("needs three numbers")
            elif self.type == "choice" and value not in self.choices:  # type: ignore[operator]
                raise ValueError(f"not one of {list(self.choices or ())}")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"setting {self.name!r}: {value!r} is not a valid {self.type}: {exc}") from None
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"setting {self.name!r}: {value} is below the minimum {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"setting {self.name!r}: {value} is above the maximum {self.maximum}")
        return value

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["choices"] = list(self.choices) if self.choices else None
        return d


def resolve_settings(declared: list[Setting], given: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with ``given``, each checked; unknown names are an error."""
    given = dict(given or {})
    by_name = {s.name: s for s in declared}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; this project has {', '.join(by_name) or 'none'}")
    return {s.name: s.coerce(given.get(s.name, s.default)) for s in declared}


@dataclass
class Result:
    """What :meth:`Project.process` returns for one volume.

    ``feedback`` goes to the subject agent (a number, usually 0..1, or a small JSON object);
    ``metrics`` are plotted by the console (name -> number, e.g. ``roi_mean``, ``fd``);
    ``maps`` are statistical images drawn over the console's live views (name -> 3-D array; the map
    named :data:`T_MAP`, the t-map of the project's contrast, is the activation overlay). They are on the
    volume's grid unless ``map_affine`` (voxel -> RAS+ mm) gives theirs, e.g. the motion reference's.
    Maps travel as float16 (values beyond +-65504 are clipped, NaN is sent as 0); return one only when it
    changed (every volume for an incremental GLM).
    """

    feedback: float | dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    map_affine: np.ndarray | None = None

    @classmethod
    def of(cls, value: Result | float | int | dict[str, Any] | None) -> Result:
        """Accept the shorthand returns: a number, a dict, or None."""
        if isinstance(value, Result):
            return value
        if value is None or isinstance(value, dict):
            return cls(feedback=value)
        if isinstance(value, (int, float)):
            return cls(feedback=float(value))
        raise TypeError(f"process() must return a Result, a number, a dict or None, not {type(value).__name__}")


class RemoteFiles(Protocol):
    """Files on the console, limited to the folders its operator allowed."""

    def list(self, folder: str) -> list[str]: ...

    def read(self, path: str) -> bytes: ...

    def write(self, path: str, data: bytes) -> None: ...


class NoRemoteFiles:
    """Used when a project runs without a console: every call is refused plainly."""

    def _refuse(self, *_: Any) -> Any:
        raise PermissionError("no console is connected, so no console files are available")

    list = read = write = _refuse


@dataclass
class RunContext:
    """What a project sees of its run: settings, timing, output folder and channels out."""

    run: str
    settings: dict[str, Any]
    tr: float | None = None
    output_dir: Path | None = None
    files: RemoteFiles = field(default_factory=NoRemoteFiles)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("rtcontrol.project"))
    _to_subject: Callable[[dict[str, Any]], None] | None = None
    responses: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    #: where ctx.share/map/submit run: the worker's Dask cluster in a run, in this process otherwise
    parallel: Any = field(default_factory=lambda: InProcess())

    def log(self, message: str) -> None:
        """A line for the project's log (saved on the worker, shown on the console)."""
        self.logger.info(message)

    def send_to_subject(self, text: str | None = None, **payload: Any) -> None:
        """A message to the subject display: an instruction, 'rest', 'run over'..."""
        message = {"text": text, **payload} if text is not None else dict(payload)
        if self._to_subject is not None:
            self._to_subject(message)
        else:
            self.log(f"to subject (no agent connected): {message}")

    def take_responses(self) -> list[dict[str, Any]]:
        """Responses from the subject (button presses, ratings) since the last call."""
        out, self.responses = self.responses, []
        return out

    # parallel work (Dask distributed on a worker; see projects/README.md)

    def share(self, value: Any) -> Any:
        """Send a large value (mask, model, this volume's data) to the cluster once; pass the handle to map/submit."""
        return self.parallel.share(value)

    def map(self, fn: Callable[..., Any], items: Any, *args: Any, **kwargs: Any) -> list[Any]:
        """``[fn(item, *args, **kwargs) for item in items]`` run in parallel; returns when all are done."""
        return self.parallel.map(fn, items, *args, **kwargs)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` in parallel; ``.result()`` waits. Must finish within this volume's process()."""
        return self.parallel.submit(fn, *args, **kwargs)

    @property
    def parallelism(self) -> int:
        """How many tasks run at once (threads in the cluster): split work into at least this many items."""
        return int(self.parallel.parallelism)

    @classmethod
    def local(cls, settings: dict[str, Any] | None = None, run: str = "local", **kw: Any) -> RunContext:
        return cls(run=run, settings=dict(settings or {}), **kw)


class InProcess:
    """``ctx.share/map/submit`` with no cluster (a project tested on its own): the same results, one at a time."""

    parallelism = 1

    def share(self, value: Any) -> Any:
        return value

    def map(self, fn: Callable[..., Any], items: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [fn(item, *args, **kwargs) for item in items]

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        done: Future[Any] = Future()
        try:
            done.set_result(fn(*args, **kwargs))
        except Exception as exc:
            done.set_exception(exc)
        return done

    def end_volume(self) -> int:
        return 0

    def close(self) -> None:
        pass


class Project:
    """Base class for experiment code. Override what you need; ``process`` is required."""

    #: Shown in the console's project list.
    name: str = ""
    description: str = ""
    #: The run settings this project takes (the console draws a form from them).
    settings: list[Setting] = []

    def start_run(self, ctx: RunContext) -> None:
        """Once per run, before the first volume: load masks and models, set up the run's state.

        Each run gets a new project object in its own process, so attributes set here are the run's state.
        """

    def process(self, volume: Volume, ctx: RunContext) -> Result | float | dict[str, Any] | None:
        """Once per volume, in acquisition order; return feedback and metrics."""
        raise NotImplementedError

    def on_response(self, response: dict[str, Any], ctx: RunContext) -> None:
        """A response from the subject arrived (also collected in ``ctx.responses``)."""
        ctx.responses.append(response)

    def end_run(self, ctx: RunContext) -> None:
        """Once per run, after the last volume or when the operator stops."""

    def design(self, settings: dict[str, Any]) -> Design | None:
        """The run's blocks/conditions, from its settings (None: no block design). A project that declares
        one reports ``metrics["condition"] = design.code_at(volume.index)`` so the console shades its
        timecourses by condition."""
        return None


# --- design: the blocks/conditions of a run (the console shades its timecourses with them) -------------------


@dataclass(frozen=True)
class Block:
    """One block of the protocol: ``volumes`` volumes of ``condition`` from volume ``onset`` (counted from the
    run's first volume, dummies included)."""

    condition: str
    onset: int
    volumes: int

    def __post_init__(self) -> None:
        if self.onset < 0 or self.volumes < 1:
            raise ValueError(f"block {self.condition!r}: onset {self.onset} and length {self.volumes} "
                             "must be >= 0 and >= 1")


@dataclass(frozen=True)
class Design:
    """The conditions a project declares (names in order; the first is the baseline) and its blocks."""

    conditions: tuple[str, ...]
    blocks: tuple[Block, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted({b.condition for b in self.blocks} - set(self.conditions))
        if unknown:
            raise ValueError(f"design: block condition(s) {', '.join(unknown)} not among {list(self.conditions)}")

    def condition_at(self, index: int) -> str | None:
        """The condition of volume ``index`` (None outside every block)."""
        for b in self.blocks:
            if b.onset <= index < b.onset + b.volumes:
                return b.condition
        return None

    def code_at(self, index: int) -> float:
        """The condition's position in :attr:`conditions` as a number (NaN outside every block): what a
        project reports as its ``condition`` metric so the console shades the volume."""
        c = self.condition_at(index)
        return float(self.conditions.index(c)) if c is not None else float("nan")

    @property
    def volumes(self) -> int:
        """The volume after the last block: the run length the design expects."""
        return max((b.onset + b.volumes for b in self.blocks), default=0)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON for the wire (the worker's run-started reply); :meth:`from_dict` reads it back."""
        return {"conditions": list(self.conditions),
                "blocks": [{"condition": b.condition, "onset": b.onset, "volumes": b.volumes} for b in self.blocks]}

    @classmethod
    def from_dict(cls, data: Any) -> Design:
        """A design from :meth:`to_dict`'s JSON, checked: a bad one raises ValueError saying what is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"design: expected an object, got {type(data).__name__}")
        conditions, blocks = data.get("conditions"), data.get("blocks", [])
        if not isinstance(conditions, list) or not conditions or not all(isinstance(c, str) for c in conditions):
            raise ValueError(f"design: conditions must be a non-empty list of names, got {conditions!r}")
        if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
            raise ValueError(f"design: blocks must be a list of at most {MAX_BLOCKS}, got "
                             f"{len(blocks) if isinstance(blocks, list) else type(blocks).__name__}")
        out = []
        for n, b in enumerate(blocks):
            if not isinstance(b, dict):
                raise ValueError(f"design: block {n} is not an object")
            c, onset, volumes = b.get("condition"), b.get("onset"), b.get("volumes")
            if not isinstance(c, str) or not all(type(v) is int for v in (onset, volumes)):
                raise ValueError(f"design: block {n} needs a condition name and whole-number onset and volumes, "
                                 f"got {b!r}")
            out.append(Block(c, onset, volumes))  # type: ignore[arg-type]
        return cls(tuple(conditions), tuple(out))

    @classmethod
    def alternating(cls, conditions: tuple[str, ...], block_volumes: int, total: int, start: int = 0) -> Design:
        """Blocks of ``block_volumes`` cycling through ``conditions`` from volume ``start`` up to ``total``."""
        if block_volumes < 1:
            raise ValueError(f"design: block length {block_volumes} must be at least 1")
        blocks, onset, n = [], start, 0
        while onset < total:
            blocks.append(Block(conditions[n % len(conditions)], onset, min(block_volumes, total - onset)))
            onset += block_volumes
            n += 1
        return cls(tuple(conditions), tuple(blocks))


#: The most blocks a design may have on the wire (a day-long run of 1-volume blocks is far fewer).
MAX_BLOCKS = 100_000

#: The metric name a project reports the current volume's condition under (its :meth:`Design.code_at`).
CONDITION_METRIC = "condition"
#: The :attr:`Result.maps` name of the t-map the console draws as its activation overlay.
T_MAP = "t"


class ProjectError(RtcontrolError):
    """A project cannot be found or loaded; the message says which and why."""


def load_project_class(folder: Path | str) -> type[Project]:
    """Import ``folder/project.py`` and return its Project subclass (the first one defined there)."""
    path = Path(folder) / "project.py"
    if not path.is_file():
        raise ProjectError(f"{folder} has no project.py")
    module_name = f"rtcontrol_project_{re.sub(r'[^A-Za-z0-9_]', '_', Path(folder).name)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec and spec.loader
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))  # a project may import its own helper modules
    spec.loader.exec_module(module)
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, Project) and obj is not Project and obj.__module__ == module_name
    ]
    if not found:
        raise ProjectError(f"{path} defines no subclass of rtcontrol.project.Project")
    if "prepare_session" in vars(found[0]):
        raise ProjectError(f"{path}: {found[0].__name__}.prepare_session is no longer called (each run has its "
                           "own process, so there is no session to prepare): do that work in start_run")
    return found[0]


def run_offline(
    project_dir: Path | str, series: Path | str | Iterable[Volume], settings: dict[str, Any] | None = None
) -> list[Result]:
    """Run a project without a worker: load it as the worker does, call ``start_run``, ``process`` for each
    volume in order and ``end_run``; return each volume's :class:`Result` (feedback and metrics).

    ``series`` is a folder holding one series (DICOM or NIfTI, read as the console reads it) or the volumes
    themselves. ``settings`` are checked against the project's declared settings, as for a run.
    """
    if isinstance(series, (str, Path)):
        from rtcontrol.scanner.series import read_series

        found = read_series(Path(series))
        if len(found) != 1:
            raise ValueError(f"{series}: expected one series, found {len(found)}")
        volumes = next(iter(found.values()))
    else:
        volumes = list(series)
    cls = load_project_class(project_dir)
    project = cls()
    ctx = RunContext.local(resolve_settings(cls.settings, settings), run="offline",
                           tr=volumes[0].tr if volumes else None)
    project.start_run(ctx)
    results = [Result.of(project.process(volume, ctx)) for volume in volumes]
    project.end_run(ctx)
    return results
