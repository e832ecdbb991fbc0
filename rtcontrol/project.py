"""The project API: what experiment code in ``projects/`` is written against.

A project is a folder ``projects/<name>/`` holding ``project.py`` that defines a subclass of
:class:`Project` (the first one found is used). The worker loads it in a fresh process per
run, calls :meth:`Project.start_run` once, :meth:`Project.process` once per volume and
:meth:`Project.end_run` at the end. Everything here is plain Python, so a project is tested
without any server::

    ctx = RunContext.local(settings={"threshold": 0.5})
    project = MyProject()
    project.start_run(ctx)
    result = project.process(volume, ctx)
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from rtcontrol.scanner.volume import Volume

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
    ``metrics`` are plotted by the console (name -> number, e.g. ``roi_mean``, ``fd``).
    """

    feedback: float | dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)

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

    list = read = write = _refuse  # type: ignore[assignment]


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

    @classmethod
    def local(cls, settings: dict[str, Any] | None = None, run: str = "local", **kw: Any) -> RunContext:
        return cls(run=run, settings=dict(settings or {}), **kw)


class Project:
    """Base class for experiment code. Override what you need; ``process`` is required."""

    #: Shown in the console's project list.
    name: str = ""
    description: str = ""
    #: The run settings this project takes (the console draws a form from them).
    settings: list[Setting] = []

    def prepare_session(self, ctx: RunContext) -> None:
        """Once per session, before the first run (load a localizer mask, a model...)."""

    def start_run(self, ctx: RunContext) -> None:
        """Once per run, before the first volume."""

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
            raise ValueError(f"block {self.condition!r}: onset {self.onset} and length {self.volumes} must be >= 0 and >= 1")


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


#: The metric name a project reports the current volume's condition under (its :meth:`Design.code_at`).
CONDITION_METRIC = "condition"
