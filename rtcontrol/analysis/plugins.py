"""Drop-in extensions found at start-up: processing steps and feedback displays.

Two sources, both optional:

* the plugins folder (:func:`rtcontrol.paths.plugins_dir`, plus any folders given): every
  ``*.py`` file and every package folder (with ``__init__.py``) not starting with ``_``;
* installed distributions declaring the entry-point group ``rtcontrol.plugins``.

A plugin module either defines ``register(registry)`` (and calls :meth:`PluginRegistry.add_step`
/ :meth:`PluginRegistry.add_display`), or simply defines :class:`~rtcontrol.analysis.steps.Step`
subclasses with a ``name`` and/or a module-level ``DISPLAYS`` list of :class:`DisplayInfo`.
A plugin that fails to import is recorded in ``registry.errors`` with its traceback and does
not stop the others (decision 8). Display plugins are metadata here (no Qt): the subject
display looks up ``factory`` ("module:callable") when it draws one.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

from rtcontrol.analysis.steps import BUILTIN_STEPS, Step
from rtcontrol.paths import plugins_dir

ENTRY_POINT_GROUP = "rtcontrol.plugins"


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
            raise ValueError(f"a step named {cls.name!r} already exists (from {self.sources.get(cls.name, 'rtcontrol')})")
        self.steps[cls.name] = cls
        self.sources[cls.name] = source

    def add_display(self, info: DisplayInfo, source: str = "") -> None:
        if info.name in self.displays:
            raise ValueError(f"a display named {info.name!r} already exists (from {self.sources.get(info.name)})")
        self.displays[info.name] = info
        self.sources[info.name] = source

    def create_step(self, name: str, **settings: Any) -> Step:
        try:
            cls = self.steps[name]
        except KeyError:
            raise KeyError(f"no processing step named {name!r}; known: {', '.join(sorted(self.steps))}") from None
        return cls(**settings)


def discover(folders: Iterable[Path] | None = None, entry_points: bool = True) -> PluginRegistry:
    """Scan the plugin folders (default: the app's ``plugins/``) and entry points."""
    registry = PluginRegistry()
    for folder in [plugins_dir()] if folders is None else list(folders):
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
