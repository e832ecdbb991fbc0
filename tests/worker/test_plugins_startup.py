"""Plugins found at worker start-up: logged, listed to the console with the projects, broken ones reported."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

from rtcontrol.link.certs import make_certificate
from rtcontrol.link.tokens import TokenStore
from rtcontrol.paths import app_root, plugins_dir
from rtcontrol.worker.client import WorkerClient
from rtcontrol.worker.embedded import READY

GOOD = '''
    from rtcontrol.analysis.plugins import DisplayInfo
    from rtcontrol.analysis.steps import Step

    class Doubler(Step):
        name = "doubler"
        description = "doubles frame.values['psc']"

        def process(self, frame):
            frame.values["psc"] = 2 * frame.values["psc"]

    DISPLAYS = [DisplayInfo("dial", "a dial from 0 to 1", "good_plugin:make_dial")]
'''

BROKEN = '''
    from rtcontrol.analysis.steps import Step
    import a_module_nobody_installed
'''


def _plugins(folder: Path) -> Path:
    folder.mkdir()
    (folder / "good_plugin.py").write_text(textwrap.dedent(GOOD))
    (folder / "broken_plugin.py").write_text(textwrap.dedent(BROKEN))
    return folder


async def _lines_until(stream: asyncio.StreamReader, prefix: str, out: list[str], timeout: float = 60.0) -> None:
    async def read() -> None:
        async for raw in stream:
            out.append(raw.decode(errors="replace").rstrip())
            if out[-1].startswith(prefix):
                return
        raise AssertionError(f"the worker's output ended before a line starting {prefix!r}: {out}")

    await asyncio.wait_for(read(), timeout)


async def test_worker_discovers_plugins_at_start_and_lists_them_to_the_console(tmp_path: Path) -> None:
    plugins = _plugins(tmp_path / "plugins")
    cert = make_certificate(["127.0.0.1"], tmp_path / "certs", days=1)
    tokens = TokenStore(tmp_path / "tokens.json")
    token = tokens.create("test-console")
    cmd = [sys.executable, str(app_root() / "main.py"), "--worker", "--host", "127.0.0.1", "--port", "0",
           "--cert", str(cert.cert), "--key", str(cert.key), "--tokens", str(tokens.path),
           "--data", str(tmp_path / "runs"), "--plugins", str(plugins), "--exit-with-parent"]
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out: list[str] = []
    try:
        assert proc.stdout is not None and proc.stderr is not None
        await _lines_until(proc.stdout, "WORKER READY", out)
        url = READY.search(out[-1]).group(1)  # type: ignore[union-attr]
        await _lines_until(proc.stdout, "plugin failed to load", out)
        # the operator's log: what was found (the shipped example too) and the broken one with its reason
        found = next(line for line in out if line.startswith("plugins: "))
        assert "doubler (step)" in found and "dial (display)" in found and "kalman (step)" in found
        assert str(plugins) in found and str(plugins_dir()) in found
        assert out[-1].startswith("plugin failed to load: broken_plugin.py: ModuleNotFoundError: "
                                  "No module named 'a_module_nobody_installed'")

        async with WorkerClient(url, token, expected_fingerprint=cert.fingerprint) as client:
            projects = await client.list_projects()
            # the reply's shape is kept
            assert isinstance(projects, list) and "template" in {p["name"] for p in projects}
            assert client.plugins is not None
            listed = {(p["name"], p["kind"]): p for p in client.plugins["plugins"]}
            assert listed[("doubler", "step")]["source"] == str(plugins.resolve() / "good_plugin.py")
            assert listed[("doubler", "step")]["description"] == "doubles frame.values['psc']"
            assert ("dial", "display") in listed and ("kalman", "step") in listed
            assert not any(name == "broken_plugin" for name, _ in listed)
            [error] = client.plugins["errors"]
            assert error["source"] == str(plugins.resolve() / "broken_plugin.py")
            assert error["error"] == ("broken_plugin.py: ModuleNotFoundError: "
                                      "No module named 'a_module_nobody_installed'")
            assert "line 3" in error["traceback"]  # where in the plugin, for whoever fixes it
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_missing_plugins_folder_is_refused_before_start(tmp_path: Path) -> None:
    tokens = TokenStore(tmp_path / "tokens.json")
    tokens.create("test-console")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(app_root() / "main.py"), "--worker", "--insecure-loopback", "--port", "0",
        "--tokens", str(tokens.path), "--plugins", str(tmp_path / "nope"),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert f"--plugins {tmp_path / 'nope'}: no such folder" in err.decode()
