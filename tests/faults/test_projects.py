"""A project that raises, exits, hangs or grows without bound, while another console's run goes on.

Expected: the faulty run ends with a clear message naming what happened (for memory: the limit, issue 12
item 4); the worker stays up and the other run on it balances its ledger.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from . import scenario as S
from .ledger import assert_balanced
from .procs import write_settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

FAULTY = {
    "raises": ("""
        if volume.index == 4:
            raise RuntimeError("deliberate failure at volume 4")
        """, r"deliberate failure at volume 4"),
    "exits": ("""
        if volume.index == 4:
            os._exit(3)
        """, r"(?i)exit.*\b3\b"),
    "hangs": ("""
        if volume.index == 4:
            time.sleep(600)
        """, r"(?i)(longer than|timed? ?out|over).*\b3(\.0)? ?s"),
    "grows": ("""
        if len(ctx.state.setdefault("kept", [])) < 16:  # bounded even with no limit: 16 x 40 MB
            ctx.state["kept"].append(np.ones(40 * 2**20, dtype=np.uint8))
        """, r"(?i)memory.*200|200.*memory"),
}


def faulty_project(body: str) -> str:
    lines = "\n".join("        " + line for line in textwrap.dedent(body).strip("\n").splitlines())
    return (
        "import os\nimport time\n\nimport numpy as np\n\nfrom rtcontrol.project import Project, Result\n\n\n"
        "class Faulty(Project):\n    description = 'fails on purpose (fault suite)'\n\n"
        "    def process(self, volume, ctx):\n" + lines + "\n        return Result(feedback=float(volume.index))\n"
    )


@pytest.mark.parametrize("kind", list(FAULTY))
async def test_a_failing_project_ends_its_run_and_the_other_run_goes_on(rig, series: Path, kind: str) -> None:
    body, message = FAULTY[kind]
    rig.add_project(f"faulty_{kind}", faulty_project(body))
    worker_args = ("--volume-timeout", "3") + (("--run-memory-limit", "200MB") if kind == "grows" else ())
    tr, volumes = 0.4, 20
    setup = await S.start(rig, worker_args=worker_args)
    faulty: dict[str, object] = {}

    async def second_console_with_the_faulty_project(s: S.Setup) -> None:
        await s.stimulus.wait_feedback(2, timeout=30)
        settings = write_settings(rig.tmp / "faulty.toml", tr=tr, volumes=12, project=f"faulty_{kind}")
        settings.write_text(settings.read_text().replace('task = "faults"', 'task = "faulty"'))
        watch = rig.tmp / "watch-faulty"
        console = await rig.start_console(settings, watch, rig.tmp / "runs-faulty", worker=s.worker.url,
                                          subject=None, name="console-faulty")
        replay = await rig.replay(series, watch, tr=tr, count=12)
        s.note(f"a second console runs project faulty_{kind} on the same worker")
        faulty["status"] = await console.wait(90)
        faulty["text"] = console.text
        await replay.wait(30)

    try:
        out = await S.run_scenario(setup, series, tr=tr, volumes=volumes, fault=second_console_with_the_faulty_project)
    finally:
        await S.close(setup)
    context = out.context() + f"\nfaulty console exit {faulty.get('status')}:\n{str(faulty.get('text'))[-4000:]}"
    assert_balanced(out.ledger, context)
    assert out.ledger.received == list(range(volumes)), context
    assert out.status == 0, context
    assert setup.worker.proc.proc.returncode is None, "the worker died\n" + setup.worker.proc.text[-3000:]
    errors = [line for line in str(faulty["text"]).splitlines() if "error" in line]
    assert faulty["status"] == 1, context
    assert any(re.search(message, line) for line in errors), \
        f"no error line matching /{message}/ in the faulty run's output\n{context}"
