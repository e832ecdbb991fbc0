"""The same run settings twice (same run id, another runs folder) against one long-running subject agent,
worker and stimulus program.

Expected (issue 12, item 1): the second run's values reach the stimulus program, and the console's
"delivered" count is what the program really received.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from . import scenario as S
from .ledger import assert_balanced

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def test_the_same_run_id_twice_reaches_the_stimulus_program_both_times(rig, series: Path) -> None:
    tr, volumes = 0.3, 12
    setup = await S.start(rig)
    try:
        first = await S.run_scenario(setup, series, tr=tr, volumes=volumes, runs_dir=rig.tmp / "runs-a")
        setup.note("second run: same settings, same run id, another runs folder, same agent and program")
        second = await S.run_scenario(setup, series, tr=tr, volumes=volumes, runs_dir=rig.tmp / "runs-b")
    finally:
        await S.close(setup)
    assert_balanced(first.ledger, first.context())
    assert first.ledger.received == list(range(volumes)), first.context()
    assert_balanced(second.ledger, "second run\n" + second.context())
    assert second.ledger.received == list(range(volumes)), second.context()
    assert second.status == 0, second.context()
