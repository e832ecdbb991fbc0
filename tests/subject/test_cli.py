"""``main.py --subject`` as a real process: certificate made on first use, token store, all three ports."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

from rtcontrol.link.tokens import TokenStore
from rtcontrol.subject.link import SubjectClient
from tests.support.subject import MAIN, LineConsumer, Recorder, _read_banner
from tests.support.wait import wait_until


async def test_subject_mode_end_to_end(tmp_path) -> None:
    store = tmp_path / "tokens.json"
    token = TokenStore(store).create("console")
    env = {**os.environ, "RTCONTROL_HOME": str(tmp_path / "home")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(MAIN), "--subject", "--host", "127.0.0.1", "--port", "0", "--tcp-port", "0",
        "--local-port", "0", "--tokens", str(store), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        banner = await _read_banner(proc)
        assert (tmp_path / "home/subject/subject.crt").exists()
        secret_file = tmp_path / "home" / "consumer.secret"
        assert banner["secret_file"] == str(secret_file)
        assert secret_file.stat().st_mode & 0o777 == 0o600  # the user's own programs only
        secret = secret_file.read_text().strip()
        assert banner["page"].endswith(f"/?secret={secret}")
        rec = Recorder()
        client = SubjectClient(banner["url"], token=token,
                               expected_fingerprint=banner["fingerprint"], **rec.kw())
        consumer = await LineConsumer.open(int(banner["tcp"]), secret=secret)
        await client.connect()
        await client.start_run({"run": "cli-run"})
        client.send_feedback("cli-run", 0, 0.9)
        assert (await consumer.next_of("feedback"))["value"] == 0.9
        await wait_until(lambda: "consumer_taken" in rec.deliveries.get(("cli-run", 0), {}), what="stamps")
        await client.close()
        consumer.close()
    finally:
        proc.send_signal(signal.SIGINT)
        rc = await asyncio.wait_for(proc.wait(), 20)
    assert rc == 0


def test_plain_link_is_refused_off_loopback(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, str(MAIN), "--subject", "--host", "0.0.0.0", "--insecure-loopback",
         "--tokens", str(tmp_path / "t.json")],
        capture_output=True, text=True, timeout=60, env={**os.environ, "RTCONTROL_HOME": str(tmp_path)})
    assert proc.returncode == 2
    assert "--insecure-loopback needs --host 127.0.0.1" in proc.stderr
