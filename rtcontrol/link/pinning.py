"""Known hosts: certificate fingerprints pinned on first use, as ssh's ``known_hosts`` does.

The file (default ``<user data>/known_hosts``) has one line per peer::

    host:port SHA256:AB:CD:...

A new peer is trusted on first use when ``on_unknown`` (a callback the GUI turns into a prompt)
says yes, or, with no callback, automatically (ssh's ``accept-new``). A peer whose certificate
changed is always refused with :class:`PinMismatch`, naming host and both fingerprints; the
operator removes the old line (``forget``) if the change is expected.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from rtcontrol.errors import RtcontrolError
from rtcontrol.files import atomic_write
from rtcontrol.link.certs import normalize_fingerprint
from rtcontrol.paths import user_data_dir

log = logging.getLogger(__name__)

#: ``on_unknown(peer, fingerprint) -> bool`` (or an awaitable of bool).
UnknownCallback = Callable[[str, str], "bool | Awaitable[bool]"]


class PinError(RtcontrolError, ConnectionError):
    """The peer's certificate is not trusted; the message says why."""


class PinMismatch(PinError):
    def __init__(self, peer: str, pinned: str, presented: str, path: Path) -> None:
        self.peer, self.pinned, self.presented = peer, pinned, presented
        super().__init__(
            f"REFUSED: the certificate of {peer} has changed.\n"
            f"  pinned fingerprint:    {pinned}\n"
            f"  presented fingerprint: {presented}\n"
            "This can mean someone is intercepting the connection. If the peer's certificate was "
            f"renewed on purpose, remove the line for {peer} from {path} and connect again."
        )


class PinRejected(PinError):
    pass


class KnownHosts:
    """A known-hosts file; thread-safe for the few writes it gets."""

    def __init__(self, path: Path | None = None, on_unknown: UnknownCallback | None = None) -> None:
        self.path = Path(path) if path is not None else user_data_dir() / "known_hosts"
        self.on_unknown = on_unknown
        self._lock = threading.Lock()

    def load(self) -> dict[str, str]:
        pins: dict[str, str] = {}
        if not self.path.exists():
            return pins
        for n, line in enumerate(self.path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{self.path}:{n}: expected 'host:port fingerprint', got {line!r}")
            pins[parts[0]] = normalize_fingerprint(parts[1])
        return pins

    def get(self, peer: str) -> str | None:
        return self.load().get(peer)

    def add(self, peer: str, fingerprint: str) -> None:
        fingerprint = normalize_fingerprint(fingerprint)
        with self._lock:
            pins = self.load()
            pins[peer] = fingerprint
            self._write(pins)

    def forget(self, peer: str) -> bool:
        with self._lock:
            pins = self.load()
            found = pins.pop(peer, None) is not None
            if found:
                self._write(pins)
            return found

    def _write(self, pins: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, "".join(f"{p} {f}\n" for p, f in sorted(pins.items())))

    async def verify(self, peer: str, fingerprint: str) -> None:
        """Accept a pinned match, ask about a new peer, refuse a changed one (raises :class:`PinError`)."""
        fingerprint = normalize_fingerprint(fingerprint)
        pinned = self.get(peer)
        if pinned == fingerprint:
            return
        if pinned is not None:
            raise PinMismatch(peer, pinned, fingerprint, self.path)
        if self.on_unknown is not None:
            answer = self.on_unknown(peer, fingerprint)
            if inspect.isawaitable(answer):
                answer = await answer
            if not answer:
                raise PinRejected(f"REFUSED: {peer} presented {fingerprint}, which the operator did not accept")
        else:
            log.warning("trusting %s on first use: %s (pinned in %s)", peer, fingerprint, self.path)
        self.add(peer, fingerprint)


async def check_expected(peer: str, presented: str, expected: str) -> None:
    """Verify against one fingerprint given explicitly (embedded worker, a ``--fingerprint`` flag)."""
    if normalize_fingerprint(presented) != normalize_fingerprint(expected):
        raise PinError(
            f"REFUSED: {peer} presented {normalize_fingerprint(presented)}, "
            f"but {normalize_fingerprint(expected)} was expected"
        )
