"""Certificates, pinning and tokens (no network)."""

from __future__ import annotations

import asyncio
import ipaddress
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from rtcontrol.link.certs import fingerprint_file, make_certificate, normalize_fingerprint
from rtcontrol.link.pinning import KnownHosts, PinMismatch, PinRejected
from rtcontrol.link.tokens import Throttle, TokenStore
from rtcontrol.paths import app_root


def test_certificate_has_sans_and_matching_fingerprint(tmp_path: Path) -> None:
    files = make_certificate(["worker.example.org", "10.0.0.5", "::1"], tmp_path, days=30)
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["worker.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("::1")]
    assert files.fingerprint == fingerprint_file(files.cert)
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days in (30, 29)


def test_certs_command_prints_fingerprint(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(app_root() / "main.py"), "certs", "--host", "127.0.0.1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("fingerprint:"))
    assert line.split()[1] == fingerprint_file(tmp_path / "rtcontrol.crt")


def test_normalize_fingerprint() -> None:
    hexs = "ab" * 32
    canonical = normalize_fingerprint(hexs)
    assert canonical.startswith("SHA256:AB:AB")
    assert normalize_fingerprint(canonical.lower()) == canonical
    with pytest.raises(ValueError, match="not a SHA-256"):
        normalize_fingerprint("abc")


def test_known_hosts_trust_on_first_use_then_refuse_change(tmp_path: Path) -> None:
    a, b = normalize_fingerprint("aa" * 32), normalize_fingerprint("bb" * 32)
    asked: list[tuple[str, str]] = []
    hosts = KnownHosts(tmp_path / "known_hosts", on_unknown=lambda p, f: asked.append((p, f)) or True)
    asyncio.run(hosts.verify("w:8765", a))
    assert asked == [("w:8765", a)]
    asyncio.run(hosts.verify("w:8765", a))  # pinned: no question
    assert len(asked) == 1
    with pytest.raises(PinMismatch) as info:
        asyncio.run(hosts.verify("w:8765", b))
    msg = str(info.value)
    assert "w:8765" in msg and a in msg and b in msg and "changed" in msg
    assert KnownHosts(tmp_path / "known_hosts").get("w:8765") == a  # the old pin stays


def test_known_hosts_operator_can_decline(tmp_path: Path) -> None:
    async def no(peer: str, fp: str) -> bool:
        return False

    hosts = KnownHosts(tmp_path / "kh", on_unknown=no)
    with pytest.raises(PinRejected, match="did not accept"):
        asyncio.run(hosts.verify("x:1", "cc" * 32))
    assert hosts.get("x:1") is None


def test_token_store_keeps_only_salted_hashes(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    token = store.create("console-a")
    other = store.create("console-b")
    assert token != other and len(token) > 40
    text = (tmp_path / "tokens.json").read_text()
    assert token not in text and token[4:] not in text
    assert stat.S_IMODE((tmp_path / "tokens.json").stat().st_mode) == 0o600
    assert store.verify(token) == "console-a"
    assert store.verify(other) == "console-b"
    assert store.verify(token + "x") is None
    assert store.verify("") is None
    assert store.revoke("console-a") and store.verify(token) is None


def test_token_command_prints_once(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    proc = subprocess.run(
        [sys.executable, str(app_root() / "main.py"), "token", "create", "--name", "lab", "--store", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip()
    assert TokenStore(path).verify(token) == "lab"


def test_throttle_doubles_then_caps() -> None:
    now = [0.0]
    th = Throttle(free=2, base=1.0, cap=4.0, clock=lambda: now[0])
    assert th.failure("a") == 0 and th.failure("a") == 0
    assert th.failure("a") == 1.0 and th.locked_for("a") == 1.0
    assert th.failure("a") == 2.0
    assert th.failure("a") == 4.0 and th.failure("a") == 4.0
    assert th.locked_for("b") == 0
    now[0] = 10.0
    assert th.locked_for("a") == 0
    th.success("a")
    assert th.failure("a") == 0


def test_throttle_forgets_an_address_after_a_quiet_period() -> None:
    now = [0.0]
    th = Throttle(free=1, base=1.0, cap=8.0, forget=100.0, clock=lambda: now[0])
    assert th.failure("a") == 0 and th.failure("a") == 1.0 and th.failure("a") == 2.0
    now[0] = 50.0
    assert th.failure("a") == 4.0  # still counting: the last lockout ended less than 100 s ago
    now[0] = 200.0
    assert th.failure("a") == 0  # quiet for over 100 s: a fresh start
