"""Remote files, subject messages and subject responses through a real worker link."""

from __future__ import annotations

from pathlib import Path

from rtcontrol.link.events import FeedbackEvent, SubjectMessage, route
from rtcontrol.worker.client import WorkerClient
from rtcontrol.worker.embedded import local_worker
from tests.support.worker import make_volume, write_project

FILES_USER = """
    class FilesUser(Project):
        def start_run(self, ctx):
            ctx.state["listing"] = ctx.files.list(".")
            ctx.state["mask"] = ctx.files.read("mask.txt").decode()
            ctx.files.write("out/result.txt", b"written by the worker")
            ctx.state["refused"] = []
            for bad in ["../secret.txt", "escape/secret.txt", "/etc/hostname"]:
                try:
                    ctx.files.read(bad)
                except PermissionError as exc:
                    ctx.state["refused"].append(str(exc))
            try:
                ctx.files.read("missing.txt")
            except FileNotFoundError as exc:
                ctx.state["refused"].append("missing: " + str(exc))
            ctx.send_to_subject("Relax", color="blue")

        def process(self, volume, ctx):
            return {"listing": ctx.state["listing"], "mask": ctx.state["mask"],
                    "refused": ctx.state["refused"], "responses": ctx.take_responses()}
"""


async def test_files_subject_messages_and_responses(tmp_path: Path) -> None:
    write_project(tmp_path / "projects", "files_user", FILES_USER)
    allowed = tmp_path / "console"
    (allowed / "out").mkdir(parents=True)
    (allowed / "mask.txt").write_text("0 1 1")
    (tmp_path / "secret.txt").write_text("do not read")
    (allowed / "escape").symlink_to(tmp_path)
    feedback, subject = [], []
    async with local_worker(projects=[tmp_path / "projects"], in_process=True) as w:
        async with WorkerClient(
            w.url, w.token, expected_fingerprint=w.fingerprint, allowed_folders=[allowed],
            on_event=route({FeedbackEvent: feedback.append,
                            SubjectMessage: lambda e: subject.append((e.run, e.message))}),
        ) as client:
            await client.start_run("files_user", {}, run="f1", tr=1.0)
            await client.send_volume(make_volume(0, run="f1"))
            await client.send_response({"button": 1, "rt": 0.42})
            await client.send_volume(make_volume(1, run="f1"))
            await client.stop_run()
    assert subject == [("f1", {"text": "Relax", "color": "blue"})]
    first, second = feedback[0].feedback, feedback[1].feedback
    assert first["listing"] == ["escape/", "mask.txt", "out/"]
    assert first["mask"] == "0 1 1"
    assert (allowed / "out" / "result.txt").read_bytes() == b"written by the worker"
    refused = first["refused"]
    assert "'..' is not allowed" in refused[0]
    assert "outside the allowed folder" in refused[1] and "outside the allowed folder" in refused[2]
    assert refused[3].startswith("missing:")
    assert first["responses"] == [] and second["responses"] == [{"button": 1, "rt": 0.42}]
