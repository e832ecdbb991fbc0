"""Write a file whole or not at all: into a hidden temporary name beside it, then renamed over it.

A reader (another program, the scanner watcher, a restart after a crash) sees the old file or the new
one, never half of one. The temporary name starts with a dot and ends in ``.tmp``, so the scanner
watcher ignores it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_file", "atomic_write"]


@contextlib.contextmanager
def atomic_file(path: Path | str, *, mode: int = 0o666) -> Iterator[IO[bytes]]:
    """A binary file to write; it replaces ``path`` when the block ends without an error, else it is
    removed and ``path`` is untouched. ``mode`` is the new file's permission (before the umask)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: Path | str, data: bytes | str, *, mode: int = 0o666) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8) in one step."""
    with atomic_file(path, mode=mode) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
