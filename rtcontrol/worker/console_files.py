"""The console's answer to a project's ``ctx.files`` requests: only inside allowed folders.

Every path is resolved (symlinks followed) and must land inside a folder the operator allowed;
``..`` components are refused outright. Relative paths are relative to the first allowed folder.
Reads and writes are capped in size. Each refusal says what was asked and why, without telling
the project where a symlink points or which folders the console allows.
"""

from __future__ import annotations

import base64
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from rtcontrol.files import atomic_write

DEFAULT_MAX_BYTES = 16 * 1024 * 1024


class ConsoleFiles:
    def __init__(self, allowed_folders: list[Path] | tuple[Path, ...] = (), max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.allowed = [Path(p).expanduser().resolve() for p in allowed_folders]
        self.max_bytes = max_bytes

    def resolve(self, path: str) -> Path:
        """The real path for a request, or PermissionError saying why not."""
        if not self.allowed:
            raise PermissionError(f"refused {path!r}: the console operator has not allowed any folder for projects")
        if not isinstance(path, str) or not path or "\x00" in path:
            raise PermissionError(f"refused {path!r}: not a usable path")
        if ".." in PurePosixPath(path).parts or ".." in PureWindowsPath(path).parts:
            raise PermissionError(f"refused {path!r}: '..' is not allowed in console file paths")
        p = Path(path).expanduser()
        if not p.is_absolute():
            p = self.allowed[0] / p
        real = p.resolve()
        for folder in self.allowed:
            if real == folder or real.is_relative_to(folder):
                return real
        # only that it is outside: where a symlink points is the console's business, not the project's
        raise PermissionError(f"refused {path!r}: it is outside the allowed folder(s)")

    def handle(self, op: str, path: str, data: str | None = None) -> Any:
        """Answer one request (blocking file I/O: call it in a thread)."""
        real = self.resolve(path)
        if op == "list":
            if not real.is_dir():
                raise FileNotFoundError(f"{path!r} is not a folder on the console")
            return sorted(e.name + ("/" if e.is_dir() else "") for e in real.iterdir())
        if op == "read":
            if not real.is_file():
                raise FileNotFoundError(f"{path!r} is not a file on the console")
            size = real.stat().st_size
            if size > self.max_bytes:
                raise PermissionError(f"refused {path!r}: {size} bytes is over the {self.max_bytes}-byte limit")
            return base64.b64encode(real.read_bytes()).decode()
        if op == "write":
            raw = base64.b64decode(data or "")
            if len(raw) > self.max_bytes:
                raise PermissionError(f"refused {path!r}: {len(raw)} bytes is over the {self.max_bytes}-byte limit")
            if real.is_dir():
                raise PermissionError(f"refused {path!r}: it is a folder")
            if not real.parent.is_dir():
                raise FileNotFoundError(f"the folder of {path!r} does not exist on the console")
            atomic_write(real, raw)
            return len(raw)
        raise PermissionError(f"refused: unknown file operation {op!r}")
