"""Finding and loading projects: folders holding ``project.py`` with a :class:`Project` subclass.

The worker itself never imports project code: it asks a short-lived subprocess to describe a
project (:meth:`ProjectCatalog.describe`), and each run imports it in its own run process. So a
project that crashes or hangs on import cannot take the worker down.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

from rtcontrol.paths import projects_dir
from rtcontrol.project import ProjectError, load_project_class

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


async def discover_plugins(folders: list[Path], timeout: float = 60.0) -> dict[str, Any]:
    """Scan ``folders`` and the installed entry points for plugins, in a short-lived subprocess
    (plugin code, like project code, must not be able to hang or kill the worker).

    Returns :meth:`PluginRegistry.summary`: ``{"plugins": [{name, kind, source, description}],
    "errors": [{source, error, traceback}]}``; a scan that fails as a whole is one error.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rtcontrol.worker.runproc", "--plugins", *(str(f) for f in folders),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError) as exc:
        proc.kill()
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        return _scan_failed(folders, f"loading the plugins took longer than {timeout:.0f} s")
    lines = out.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return _scan_failed(folders, f"the plugin scan failed: {tail[0]}", err.decode(errors="replace"))
    try:
        return json.loads(lines[-1])
    except ValueError:
        return _scan_failed(folders, "the plugin scan printed no summary (a plugin writing to stdout?)", out.decode())


def _scan_failed(folders: list[Path], message: str, detail: str = "") -> dict[str, Any]:
    where = ", ".join(str(f) for f in folders)
    return {"plugins": [], "errors": [{"source": where, "error": message, "traceback": detail}]}


def describe_folder(folder: Path) -> dict[str, Any]:
    """Name, title, description and settings of the project in ``folder`` (imports it)."""
    cls = load_project_class(folder)
    return {
        "name": Path(folder).name,
        "title": cls.name or Path(folder).name,
        "description": (cls.description or inspect.getdoc(cls) or "").strip(),
        "settings": [s.to_dict() for s in cls.settings],
    }


class ProjectCatalog:
    """The projects a worker offers: ``projects/`` of the install plus extra folders (later wins)."""

    def __init__(self, extra_dirs: list[Path] | None = None, *, include_builtin: bool = True,
                 describe_timeout: float = 30.0) -> None:
        self.dirs = ([projects_dir()] if include_builtin else []) + [Path(d) for d in extra_dirs or []]
        self.describe_timeout = describe_timeout
        self._cache: dict[Path, tuple[float, dict[str, Any]]] = {}

    def folders(self) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for base in self.dirs:
            if not base.is_dir():
                continue
            for child in sorted(base.iterdir()):
                if (child / "project.py").is_file() and NAME_RE.match(child.name):
                    out[child.name] = child.resolve()
        return out

    def folder(self, name: str) -> Path:
        folders = self.folders()
        if name not in folders:
            raise ProjectError(f"no project named {name!r} on this worker; available: {', '.join(folders) or 'none'}")
        return folders[name]

    async def describe(self, name: str) -> dict[str, Any]:
        folder = self.folder(name)
        mtime = max(p.stat().st_mtime for p in folder.glob("*.py"))
        cached = self._cache.get(folder)
        if cached and cached[0] == mtime:
            return cached[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rtcontrol.worker.runproc", "--describe", str(folder),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.describe_timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise ProjectError(f"project {name!r}: loading took longer than {self.describe_timeout:.0f} s") from None
        if proc.returncode != 0:
            raise ProjectError(f"project {name!r} cannot be loaded:\n{err.decode(errors='replace').strip()}")
        info = json.loads(out.decode().strip().splitlines()[-1])
        self._cache[folder] = (mtime, info)
        return info

    async def list(self) -> list[dict[str, Any]]:
        """Every project with name, title and description; a broken one carries ``error``."""
        names = list(self.folders())
        infos = await asyncio.gather(*(self.describe(n) for n in names), return_exceptions=True)
        out = []
        for name, info in zip(names, infos):
            if isinstance(info, ProjectError):
                out.append({"name": name, "title": name, "description": "", "error": str(info)})
            elif isinstance(info, BaseException):
                raise info
            else:
                out.append({k: info[k] for k in ("name", "title", "description")})
        return out
