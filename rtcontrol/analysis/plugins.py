"""Drop-in extensions found at start-up: processing steps and feedback displays.

Two sources, both optional:

* the plugins folders (:func:`plugin_folders`: the install's ``plugins/`` and those listed in
  ``$RTCONTROL_PLUGINS``, which the worker's ``--plugins DIR`` sets for its runs; or the folders
  given): every ``*.py`` file and every package folder (with ``__init__.py``) not starting with ``_``;
* installed distributions declaring the entry-point group ``rtcontrol.plugins``.

A plugin module either defines ``register(registry)`` (and calls :meth:`PluginRegistry.add_step`
/ :meth:`PluginRegistry.add_display`), or simply defines :class:`~rtcontrol.analysis.steps.Step`
subclasses with a ``name`` and/or a module-level ``DISPLAYS`` list of :class:`DisplayInfo`.
A plugin that fails to import is recorded in ``registry.errors`` with its traceback and does
not stop the others (bad input gets a clear error and the run goes on). Display plugins are metadata here
(no Qt): the subject
display looks up ``factory`` ("module:callable") when it draws one.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from rtcontrol.analysis.steps import BUILTIN_STEPS, Step
from rtcontrol.paths import plugins_dir

ENTRY_POINT_GROUP = "rtcontrol.plugins"

#: Extra plugin folders (os.pathsep-separated), searched after the install's ``plugins/``.
PLUGINS_ENV = "RTCONTROL_PLUGINS"


def plugin_folders() -> list[Path]:
    """The install's ``plugins/``, then the folders in ``$RTCONTROL_PLUGINS``."""
    extra = [Path(p) for p in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if p]
    return [plugins_dir(), *extra]


@dataclass(frozen=True)
class DisplayInfo:
    """A feedback display a plugin offers to the subject agent."""

    name: str
    description: str
    factory: str  #: "module:callable" building the display (imported only by the Qt side)
    feedback: str = "number"  #: what it shows: "number" (0..1) or "object" (a JSON dict)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if ":" not in self.factory:
            raise ValueError(f"display {self.name!r}: factory must be 'module:callable', got {self.factory!r}")


@dataclass
class PluginError:
    source: str  #: file path or entry point name
    message: str  #: the exception and its traceback


@dataclass
class PluginRegistry:
    steps: dict[str, type[Step]] = field(default_factory=lambda: dict(BUILTIN_STEPS))
    displays: dict[str, DisplayInfo] = field(default_factory=dict)
    errors: list[PluginError] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  #: step/display name -> where it came from

    def add_step(self, cls: type[Step], source: str = "") -> None:
        if not (inspect.isclass(cls) and issubclass(cls, Step)):
            raise TypeError(f"{cls!r} is not a Step subclass")
        if not cls.name:
            raise ValueError(f"step class {cls.__qualname__} has no name")
        if cls.name in self.steps and self.steps[cls.name] is not cls:
            raise ValueError(f"a step named {cls.name!r} already exists (from "
                             f"{self.sources.get(cls.name, 'rtcontrol')})")
        self.steps[cls.name] = cls
        self.sources[cls.name] = source

    def add_display(self, info: DisplayInfo, source: str = "") -> None:
        if info.name in self.displays:
            raise ValueError(f"a display named {info.name!r} already exists (from {self.sources.get(info.name)})")
        self.displays[info.name] = info
        self.sources[info.name] = source

    def summary(self) -> dict[str, Any]:
        """JSON-safe list of what the plugins added (names, kinds, sources) and what failed to load.

        ``errors[i]["error"]`` is one line naming the file and the exception; the full traceback
        is beside it."""
        found = [
            {"name": name, "kind": "step", "source": self.sources[name], "description": cls.description}
            for name, cls in sorted(self.steps.items())
            if name in self.sources
        ] + [
            {"name": name, "kind": "display", "source": self.sources.get(name, ""), "description": info.description}
            for name, info in sorted(self.displays.items())
        ]
        errors = [
            {"source": e.source, "error": f"{Path(e.source).name}: {_last_line(e.message)}", "traceback": e.message}
            for e in self.errors
        ]
        return {"plugins": found, "errors": errors}

    def create_step(self, name: str, **settings: Any) -> Step:
        try:
            cls = self.steps[name]
        except KeyError:
            raise KeyError(f"no processing step named {name!r}; known: {', '.join(sorted(self.steps))}") from None
        return cls(**settings)


def discover(folders: Iterable[Path] | None = None, entry_points: bool = True) -> PluginRegistry:
    """Scan the plugin folders (default: the app's ``plugins/``) and entry points."""
    registry = PluginRegistry()
    for folder in plugin_folders() if folders is None else list(folders):
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.name.startswith(("_", ".")):
                continue
            if path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").is_file()):
                _load_file(registry, path)
    if entry_points:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            source = f"entry point {ep.name} ({ep.value})"
            try:
                obj = ep.load()
                if isinstance(obj, ModuleType):
                    _register_module(registry, obj, source)
                else:
                    obj(registry)
            except Exception:
                registry.errors.append(PluginError(source, traceback.format_exc()))
    return registry


def _last_line(message: str) -> str:
    """The exception line of a traceback ('ZeroDivisionError: division by zero')."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "failed to load"


def _load_file(registry: PluginRegistry, path: Path) -> None:
    module_name = f"rtcontrol_plugins.{path.stem}"
    source = str(path)
    try:
        target = path / "__init__.py" if path.is_dir() else path
        spec = importlib.util.spec_from_file_location(
            module_name, target, submodule_search_locations=[str(path)] if path.is_dir() else None
        )
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
        _register_module(registry, module, source)
    except Exception:
        registry.errors.append(PluginError(source, traceback.format_exc()))


def _register_module(registry: PluginRegistry, module: ModuleType, source: str) -> None:
    register = getattr(module, "register", None)
    if callable(register):
        register(registry)
        return
    for obj in vars(module).values():
        if inspect.isclass(obj) and issubclass(obj, Step) and obj.__module__ == module.__name__ and obj.name:
            registry.add_step(obj, source)
    for info in getattr(module, "DISPLAYS", []):
        registry.add_display(info, source)
