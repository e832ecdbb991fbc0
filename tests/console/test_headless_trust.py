"""``main.py run --no-gui`` and certificates: an unknown one is refused before the token leaves,
unless its fingerprint is given or ``--trust-new`` is set. Real TLS servers on 127.0.0.1 (with a
certificate made for another name) record whether a token reached them; the console is a real process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.asyncio.server import serve

from rtcontrol.link.certs import make_certificate, server_context
from rtcontrol.link.codec import decode_message, encode_message
from rtcontrol.paths import app_root

pytestmark = pytest.mark.timeout(120)

WORKER_TOKEN, SUBJECT_TOKEN = "worker-secret-token", "subject-secret-token"


@dataclass
class FakePeer:
    """A TLS websocket server that keeps every hello it gets and refuses it (as a wrong token)."""

    url: str
    fingerprint: str
    tokens: list[str] = field(default_factory=list)
    peer: str = ""


@contextlib.asynccontextmanager
async def fake_peer(folder: Path, name: str) -> AsyncIterator[FakePeer]:
    cert = make_certificate(["other.example"], folder, name=name, days=1)

    async def handler(conn) -> None:
        with contextlib.suppress(Exception):
            hello = decode_message(await asyncio.wait_for(conn.recv(), 10))
            peer.tokens.append(str(hello.get("token")))
            await conn.send(encode_message("error", code="bad_token", message="a fake peer"))

    async with serve(handler, "127.0.0.1", 0, ssl=server_context(cert.cert, cert.key)) as server:
        port = server.sockets[0].getsockname()[1]
        peer = FakePeer(f"wss://127.0.0.1:{port}", cert.fingerprint, peer=f"127.0.0.1:{port}")
        yield peer


async def console(tmp_path: Path, worker: FakePeer, subject: FakePeer, *extra: str) -> tuple[int, str]:
    watch = tmp_path / "watch"
    watch.mkdir(exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(app_root() / "main.py"), "run", "--no-gui", "--watch", str(watch),
        "--runs-dir", str(tmp_path / "runs"), "--worker", worker.url, "--worker-token", WORKER_TOKEN,
        "--subject", subject.url, "--subject-token", SUBJECT_TOKEN, *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "RTCONTROL_HOME": str(tmp_path / "home")},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    return proc.returncode or 0, out.decode(errors="replace")


@pytest.fixture
async def peers(tmp_path: Path) -> AsyncIterator[tuple[FakePeer, FakePeer]]:
    async with fake_peer(tmp_path / "certs", "w") as w, fake_peer(tmp_path / "certs", "s") as s:
        yield w, s


def known_hosts(tmp_path: Path) -> Path:
    return tmp_path / "home" / "known_hosts"


async def test_unknown_certificates_are_refused_before_the_token_leaves(tmp_path: Path, peers) -> None:
    worker, subject = peers
    code, out = await console(tmp_path, worker, subject)
    assert code == 2, out
    assert worker.tokens == [] and subject.tokens == [], "a token reached a certificate nobody approved"
    refused = f"REFUSED: {worker.peer} presented an unknown certificate, {worker.fingerprint}; the token was not sent"
    assert refused in out
    assert f"--worker-fingerprint {worker.fingerprint}" in out and f"--subject-fingerprint {subject.fingerprint}" in out
    assert not known_hosts(tmp_path).exists() or worker.fingerprint not in known_hosts(tmp_path).read_text()
    assert not list((tmp_path / "runs").glob("sub-*")), "a run was started"


async def test_a_matching_fingerprint_lets_the_token_go(tmp_path: Path, peers) -> None:
    worker, subject = peers
    code, out = await console(tmp_path, worker, subject, "--worker-fingerprint", worker.fingerprint.lower())
    assert worker.tokens == [WORKER_TOKEN], out
    assert subject.tokens == [] and f"--subject-fingerprint {subject.fingerprint}" in out  # no flag for it: refused
    assert code == 2


async def test_a_wrong_fingerprint_is_refused(tmp_path: Path, peers) -> None:
    worker, subject = peers
    code, out = await console(tmp_path, worker, subject, "--worker-fingerprint", subject.fingerprint,
                              "--subject-fingerprint", worker.fingerprint)
    assert code == 2 and worker.tokens == [] and subject.tokens == [], out
    assert f"REFUSED: {worker.peer} presented {worker.fingerprint}, but {subject.fingerprint} was expected" in out


async def test_fingerprints_from_the_settings_file(tmp_path: Path, peers) -> None:
    worker, subject = peers
    settings = tmp_path / "run.toml"
    settings.write_text(f'[worker]\nfingerprint = "{worker.fingerprint}"\n[subject]\nfingerprint = '
                        f'"{subject.fingerprint}"\n')
    code, out = await console(tmp_path, worker, subject, "--settings", str(settings))
    assert worker.tokens == [WORKER_TOKEN] and subject.tokens == [SUBJECT_TOKEN], out


async def test_trust_new_pins_and_then_a_pinned_certificate_works_and_a_changed_one_is_refused(
        tmp_path: Path, peers) -> None:
    worker, subject = peers
    code, out = await console(tmp_path, worker, subject, "--trust-new")
    assert worker.tokens == [WORKER_TOKEN] and subject.tokens == [SUBJECT_TOKEN], out
    assert f"trusting {worker.peer} on first use (--trust-new)" in out
    pins = known_hosts(tmp_path).read_text()
    assert f"{worker.peer} {worker.fingerprint}" in pins and f"{subject.peer} {subject.fingerprint}" in pins
    # pinned: accepted without any flag
    code, out = await console(tmp_path, worker, subject)
    assert worker.tokens == [WORKER_TOKEN] * 2 and subject.tokens == [SUBJECT_TOKEN] * 2, out
    # changed (the pins swapped): refused as before, even with --trust-new
    known_hosts(tmp_path).write_text(f"{worker.peer} {subject.fingerprint}\n{subject.peer} {worker.fingerprint}\n")
    code, out = await console(tmp_path, worker, subject, "--trust-new")
    assert code == 2 and worker.tokens == [WORKER_TOKEN] * 2 and subject.tokens == [SUBJECT_TOKEN] * 2, out
    assert f"REFUSED: the certificate of {worker.peer} has changed" in out


def test_a_malformed_fingerprint_is_a_settings_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rtcontrol.cli import main

    assert main(["run", "--no-gui", "--watch", str(tmp_path), "--worker", "wss://127.0.0.1:1",
                 "--worker-fingerprint", "SHA256:12:34"]) == 2
    assert "[worker] fingerprint = 'SHA256:12:34': not a SHA-256 fingerprint" in capsys.readouterr().err
