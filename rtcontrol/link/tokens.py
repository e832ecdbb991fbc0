"""Access tokens: created once by a command, stored only as salted hashes, so a copied store file lets
no one in (the trust rules are in docs/architecture.md, decision 5).

A token is 32 random bytes (URL-safe text, prefix ``rtc_``). The store is a JSON file holding,
per token, a name, a random salt and ``sha256(salt + token)``; a presented token is compared
with every entry in constant time. :class:`Throttle` slows down an address that keeps
presenting bad tokens (without ever keeping a correct token out).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rtcontrol.files import atomic_write
from rtcontrol.paths import user_data_dir


def default_store_path() -> Path:
    return user_data_dir() / "tokens.json"


def _digest(salt: bytes, token: str) -> bytes:
    return hashlib.sha256(salt + token.encode("utf-8")).digest()


class TokenStore:
    """The server's token file; :meth:`create` returns the token text exactly once."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()

    def _load(self) -> list[dict]:
        if not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text())
            entries = data["tokens"]
            assert isinstance(entries, list)
            return entries
        except (json.JSONDecodeError, KeyError, AssertionError, TypeError) as exc:
            raise ValueError(f"token store {self.path} is damaged ({exc}); "
                             "recreate it with 'main.py token create'") from None

    def _save(self, entries: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps({"tokens": entries}, indent=1), mode=0o600)

    def create(self, name: str) -> str:
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"token name {name!r} must be non-empty without spaces")
        entries = [e for e in self._load() if e.get("name") != name]
        token = "rtc_" + secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        entries.append(
            {
                "name": name,
                "salt": salt.hex(),
                "sha256": _digest(salt, token).hex(),
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
        )
        self._save(entries)
        return token

    def names(self) -> list[str]:
        return [e["name"] for e in self._load()]

    def revoke(self, name: str) -> bool:
        entries = self._load()
        kept = [e for e in entries if e.get("name") != name]
        if len(kept) != len(entries):
            self._save(kept)
            return True
        return False

    def verify(self, token: str) -> str | None:
        """The token's name, or None. Every entry is checked (no early exit on a match)."""
        if not isinstance(token, str) or len(token) > 256:
            return None
        found = None
        for entry in self._load():
            ok = hmac.compare_digest(_digest(bytes.fromhex(entry["salt"]), token), bytes.fromhex(entry["sha256"]))
            if ok and found is None:
                found = entry["name"]
        return found


@dataclass
class Throttle:
    """Per-address lockout after repeated bad tokens: ``free`` failures, then doubling waits up to ``cap``.

    It counts the failures of an address, never a success: the address may be shared (a NAT, a
    proxy, another program on the console), and the console logging in must not hand a guessing
    program there a fresh set of free tries. The server lets a correct token in during a lockout
    (:func:`rtcontrol.link.transport.serve`), so the count never blocks the console. An address with
    no failure for ``forget`` seconds starts over.
    """

    free: int = 3
    base: float = 1.0
    cap: float = 300.0
    forget: float = 900.0
    clock: Callable[[], float] = time.monotonic
    _fails: dict[str, tuple[int, float]] = field(default_factory=dict)  # address -> (count, locked until)

    def locked_for(self, address: str) -> float:
        """Seconds this address's wrong tokens are still locked out (0 if none)."""
        count, until = self._fails.get(address, (0, 0.0))
        return max(0.0, until - self.clock())

    def failure(self, address: str) -> float:
        """Record a bad token; return the lockout now in force (seconds)."""
        now = self.clock()
        count, until = self._fails.get(address, (0, 0.0))
        if now - until > self.forget:
            count = 0
        count += 1
        wait = 0.0 if count <= self.free else min(self.cap, self.base * 2 ** (count - self.free - 1))
        self._fails[address] = (count, now + wait)
        if len(self._fails) > 10_000:  # many addresses: keep those still locked out
            self._fails = {a: v for a, v in self._fails.items() if v[1] > now}
        return wait

    def success(self, address: str) -> None:
        """Forget an address's failures (not called by the server; see the class docstring)."""
        self._fails.pop(address, None)
