"""atomic_write / atomic_file: the old file or the new one, never half, and no temporary file left."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from rtcontrol.files import atomic_file, atomic_write


def test_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    atomic_write(path, "old")
    atomic_write(path, b"new bytes")
    assert path.read_bytes() == b"new bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    atomic_write(path, "old")
    with pytest.raises(RuntimeError), atomic_file(path) as fh:
        fh.write(b"half")
        raise RuntimeError("disk gone")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_mode_is_applied_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    atomic_write(path, "x", mode=0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
