"""The worker's plugins reach the operator: each found plugin logged once, each broken one as an error
in plain words, and all listed under the project chooser. A real worker (in this process) over TLS."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from PySide6 import QtCore

from rtcontrol.console import events as ev
from rtcontrol.console import settings as S
from rtcontrol.console.links import WorkerAdapter
from rtcontrol.console.session import ConsoleSession
from rtcontrol.gui.main_window import MainWindow

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]

GOOD = '''
    from rtcontrol.analysis.steps import Step

    class Doubler(Step):
        name = "doubler"
        description = "doubles the feedback value"

        def process(self, frame):
            frame.values["psc"] = 2 * frame.values["psc"]
'''
BROKEN = '''
    import a_module_nobody_installed
'''


def test_plugins_are_logged_once_and_listed(qtbot: Any, qloop: Any, tmp_path: Path) -> None:
    from rtcontrol.link.certs import make_certificate, server_context
    from rtcontrol.link.tokens import TokenStore
    from rtcontrol.worker.client import WorkerClient
    from rtcontrol.worker.server import WorkerServer

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "good_plugin.py").write_text(textwrap.dedent(GOOD))
    (plugins / "broken_plugin.py").write_text(textwrap.dedent(BROKEN))
    session = ConsoleSession(S.default_settings().with_values("run", watch_folder=str(tmp_path)),
                             runs_dir=tmp_path / "runs")
    store = QtCore.QSettings(str(tmp_path / "layout.ini"), QtCore.QSettings.Format.IniFormat)
    window = MainWindow(session, settings_store=store)
    qtbot.addWidget(window)
    c = session.controller
    logged: list[ev.LogMessage] = []
    c.events.subscribe(lambda e: logged.append(e) if isinstance(e, ev.LogMessage) else None)

    async def scenario() -> None:
        cert = make_certificate(["127.0.0.1"], tmp_path / "certs", days=1)
        tokens = TokenStore(tmp_path / "tokens.json")
        token = tokens.create("test-console")
        server = WorkerServer(tokens=tokens, ssl_context=server_context(cert.cert, cert.key),
                              data_dir=tmp_path / "worker", plugin_dirs=[plugins])
        port = await server.start("127.0.0.1", 0)
        adapter = WorkerAdapter(c)
        adapter.client = WorkerClient(f"wss://127.0.0.1:{port}", token, expected_fingerprint=cert.fingerprint)
        try:
            await adapter.client.connect()
            c.attach_worker(adapter)
            await c.list_projects()
            await c.list_projects()  # the project list is fetched again (e.g. a reconnect): no repeats
        finally:
            await adapter.client.close()
            await server.close()

    qloop.run(scenario())
    found = [m.text for m in logged if m.text.startswith("plugin doubler")]
    assert found == [f"plugin doubler (step) from {plugins.resolve() / 'good_plugin.py'}: doubles the feedback value"]
    assert len([m for m in logged if m.text.startswith("plugin kalman (step)")]) == 1  # the shipped example
    errors = [m.text for m in logged if m.level == "error"]
    assert errors == [f"the plugin {plugins.resolve() / 'broken_plugin.py'} could not be loaded, so it is not "
                      "available: ModuleNotFoundError: No module named 'a_module_nobody_installed'. "
                      "Fix or remove it and restart the worker."]
    label = window.setup.plugins
    assert "doubler (step)" in label.text() and "kalman (step)" in label.text() and "1 failed to load" in label.text()
    assert "FAILED: " + str(plugins.resolve() / "broken_plugin.py") in label.toolTip()
    assert "doubles the feedback value" in label.toolTip()
    window.close()
