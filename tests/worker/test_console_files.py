"""The console's side of remote files: only inside allowed folders, with clear refusals."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from rtcontrol.worker.console_files import ConsoleFiles


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "mask.txt").write_text("1 0 1")
    secret = tmp_path / "secret.txt"
    secret.write_text("patient list")
    (allowed / "escape").symlink_to(tmp_path)  # a symlink pointing out of the allowed folder
    (allowed / "secret_link.txt").symlink_to(secret)
    return allowed, secret


def test_list_read_write_inside(tree) -> None:
    allowed, _ = tree
    files = ConsoleFiles([allowed])
    assert files.handle("list", ".") == ["escape/", "mask.txt", "secret_link.txt", "sub/"]
    assert base64.b64decode(files.handle("read", "mask.txt")) == b"1 0 1"
    assert base64.b64decode(files.handle("read", str(allowed / "mask.txt"))) == b"1 0 1"
    assert files.handle("write", "sub/out.bin", base64.b64encode(b"\x00\x01").decode()) == 2
    assert (allowed / "sub" / "out.bin").read_bytes() == b"\x00\x01"


@pytest.mark.parametrize(
    "op, path, needle",
    [
        ("read", "../secret.txt", "'..' is not allowed"),
        ("read", "sub/../../secret.txt", "'..' is not allowed"),
        ("read", "escape/secret.txt", "outside the allowed folder"),
        ("read", "secret_link.txt", "outside the allowed folder"),
        ("write", "escape/new.txt", "outside the allowed folder"),
        ("list", "/etc", "outside the allowed folder"),
        ("read", "", "not a usable path"),
        ("delete", "mask.txt", "unknown file operation"),
    ],
)
def test_refusals(tree, op: str, path: str, needle: str) -> None:
    allowed, secret = tree
    with pytest.raises(PermissionError, match=needle):
        ConsoleFiles([allowed]).handle(op, path, "")
    assert secret.read_text() == "patient list"
    assert not (secret.parent / "new.txt").exists()


@pytest.mark.parametrize("path", ["escape/secret.txt", "secret_link.txt", "escape"])
def test_refusal_does_not_tell_where_a_symlink_points(tree, path: str) -> None:
    allowed, secret = tree
    with pytest.raises(PermissionError) as info:
        ConsoleFiles([allowed]).handle("read", path)
    message = str(info.value)
    assert message == f"refused {path!r}: it is outside the allowed folder(s)"
    assert str(secret.parent) not in message and str(allowed) not in message


def test_nothing_allowed_and_size_cap_and_missing(tree) -> None:
    allowed, _ = tree
    with pytest.raises(PermissionError, match="has not allowed any folder"):
        ConsoleFiles([]).handle("list", ".")
    small = ConsoleFiles([allowed], max_bytes=3)
    with pytest.raises(PermissionError, match="over the 3-byte limit"):
        small.handle("read", "mask.txt")
    with pytest.raises(PermissionError, match="over the 3-byte limit"):
        small.handle("write", "big.txt", base64.b64encode(b"1234").decode())
    with pytest.raises(FileNotFoundError, match="not a file"):
        ConsoleFiles([allowed]).handle("read", "nope.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ConsoleFiles([allowed]).handle("write", "nodir/x.txt", "")
