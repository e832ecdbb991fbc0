"""The local consumer secret: what a stimulus program shows the subject agent to be let in.

Any process on the presentation PC can open 127.0.0.1 ports, so the NDJSON port and the page's websocket
would otherwise take "responses" and "displayed" stamps from anyone. The agent keeps a random secret in
``consumer.secret`` in its home folder (``$RTCONTROL_HOME`` or ``~/.rtcontrol``, where its tokens and
certificate live), readable by the user only; the user's own stimulus programs read it from there (or
get it in the page's URL) and send it in their ``hello``. It is made once and kept across restarts, so a
stimulus script set up once keeps working.
"""

from __future__ import annotations

import hmac
import os
import secrets
import tempfile
import time
from pathlib import Path

from rtcontrol.errors import RtcontrolError
from rtcontrol.paths import user_data_dir

FILE_NAME = "consumer.secret"


class SecretError(RtcontrolError, RuntimeError):
    """The secret file cannot be read or made; the message says where and why."""


def default_path() -> Path:
    """``consumer.secret`` in the agent's home folder (the folder of its tokens and certificate)."""
    return user_data_dir() / FILE_NAME


def read_secret(path: Path | str | None = None) -> str:
    """The secret a stimulus program sends in its hello; a clear error when the agent has not made it."""
    path = Path(path) if path is not None else default_path()
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise SecretError(f"no consumer secret at {path}: the subject agent writes it there when it first "
                          "starts ('python main.py --subject'); or pass the secret itself") from None
    except OSError as exc:
        raise SecretError(f"cannot read the consumer secret {path}: {exc.strerror or exc}") from None
    if not text:
        raise SecretError(f"the consumer secret file {path} is empty; delete it and restart the subject agent")
    return text


def load_or_create(path: Path | str | None = None) -> str:
    """The agent's secret: read from ``path``, or made there with mode 0600 if it does not exist yet.

    Creation is atomic (a temporary file linked into place), so two agents starting at once agree."""
    path = Path(path) if path is not None else default_path()
    for _ in range(50):
        if path.exists():
            _tighten(path)
            try:
                return read_secret(path)
            except SecretError:
                time.sleep(0.01)  # another process may be writing it right now
                continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".consumer-", dir=path.parent)  # mkstemp makes it 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
            try:
                os.link(tmp, path)  # fails if another process made it first: then we read theirs
            except FileExistsError:
                pass
            except OSError:  # file systems without hard links
                if not path.exists():
                    os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return read_secret(path)


def _tighten(path: Path) -> None:
    """Readable by the user only (a no-op where modes do not apply)."""
    try:
        if os.name == "posix" and path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError:
        pass


def matches(given: object, expected: str) -> bool:
    """Constant-time comparison of what a consumer sent with the agent's secret."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
