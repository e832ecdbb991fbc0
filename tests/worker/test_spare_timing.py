"""The worker starts the next run's spare process after a run's first result, not while its first volume is
processed: a spare's start-up (Python, numpy, the codec: ~0.5 s of CPU, more on a busy machine) at the run's
start competed with volume 0 for the CPU (two cores: the console, the worker and the run process already).
How fast the first volume is, is measured by ``BENCH first_volume``; this checks when the spare starts."""

from __future__ import annotations

from pathlib import Path

from rtcontrol.link.certs import make_certificate, server_context
from rtcontrol.link.events import FeedbackEvent, route
from rtcontrol.link.tokens import TokenStore
from rtcontrol.worker.client import WorkerClient
from rtcontrol.worker.projects import ProjectCatalog
from rtcontrol.worker.server import WorkerServer
from tests.support.wait import wait_until
from tests.support.worker import make_volume, write_project

ECHO = '''
from rtcontrol.project import Project, Result

class Echo(Project):
    name = "echo"

    def process(self, volume, ctx):
        return Result(feedback=float(volume.index))
'''


async def test_the_next_runs_spare_starts_after_the_first_result(tmp_path: Path) -> None:
    write_project(tmp_path / "projects", "echo", ECHO)
    cert = make_certificate(["127.0.0.1"], tmp_path / "certs")
    store = TokenStore(tmp_path / "tokens.json")
    token = store.create("console")
    server = WorkerServer(tokens=store, ssl_context=server_context(cert.cert, cert.key),
                          catalog=ProjectCatalog([tmp_path / "projects"]), data_dir=tmp_path / "runs")
    feedback: list[FeedbackEvent] = []
    port = await server.start("127.0.0.1", 0)
    client = WorkerClient(f"wss://127.0.0.1:{port}", token, expected_fingerprint=cert.fingerprint,
                          on_event=route({FeedbackEvent: feedback.append}))
    try:
        first_spare = await server.spare.waiting()  # started with the worker, for the first run
        assert first_spare is not None
        await client.connect()
        await client.start_run("echo", {}, run="a", tr=1.0)
        assert not server.spare.filled, "the next run's spare was started while this run's first volume is due"
        await client.send_volume(make_volume(0, run="a"))
        await wait_until(lambda: len(feedback) == 1, 30, "the first volume's feedback")
        await wait_until(lambda: server.spare.filled, 5, "the next run's spare to be started")
        refilled = await server.spare.waiting()
        assert refilled is not None and refilled.proc.pid != first_spare.proc.pid
        await client.stop_run()
    finally:
        await client.close()
        await server.close()
    assert [(e.index, e.feedback) for e in feedback] == [(0, 0.0)]
