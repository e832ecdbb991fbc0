"""The project API's design declaration, and roi_feedback's baseline and feedback blocks."""

from __future__ import annotations

import math

import pytest

from rtcontrol.paths import projects_dir
from rtcontrol.project import Block, Design, Result, RunContext, resolve_settings
from rtcontrol.scanner.synth import SynthSpec, generate
from rtcontrol.worker.projects import load_project_class


def test_design_checks_and_codes() -> None:
    d = Design.alternating(("baseline", "feedback"), 10, 35, start=2)
    assert [(b.condition, b.onset, b.volumes) for b in d.blocks] == [
        ("baseline", 2, 10), ("feedback", 12, 10), ("baseline", 22, 10), ("feedback", 32, 3)]
    assert math.isnan(d.code_at(0)) and d.code_at(2) == 0.0 and d.code_at(12) == 1.0 and math.isnan(d.code_at(35))
    with pytest.raises(ValueError, match="not among"):
        Design(("rest",), (Block("task", 0, 5),))
    with pytest.raises(ValueError, match="must be"):
        Block("rest", 0, 0)


@pytest.mark.parametrize("block_volumes", [0, 10])
def test_roi_feedback_reports_its_baseline_and_feedback_blocks(block_volumes: int) -> None:
    """On a synthetic run (10-volume off/on blocks, 2 dummies): the declared design, and every volume's
    ``condition`` metric says which block it is in."""
    run = generate(SynthSpec(volumes=42, seed=3))
    cls = load_project_class(projects_dir() / "roi_feedback")
    s = resolve_settings(cls.settings, {"skip_volumes": 2, "baseline_volumes": 8, "expected_volumes": 40,
                                        "block_volumes": block_volumes})
    project = cls()
    design = project.design(s)
    if block_volumes:
        assert [(b.condition, b.onset) for b in design.blocks] == [
            ("baseline", 2), ("feedback", 12), ("baseline", 22), ("feedback", 32)]
    else:
        assert [(b.condition, b.onset, b.volumes) for b in design.blocks] == [("baseline", 2, 8), ("feedback", 10, 32)]
    ctx = RunContext.local(s, tr=run.spec.tr)
    project.start_run(ctx)
    codes = []
    for t in range(run.spec.volumes):
        codes.append(Result.of(project.process(run.to_volume(t), ctx)).metrics.get("condition"))
    assert codes[:2] == [None, None]  # dummies: no metrics at all
    assert codes[2:] == [design.code_at(t) for t in range(2, 42)]
    assert codes[5] == 0.0 and codes[12] == 1.0 and codes[40] == 1.0


def test_design_travels_as_plain_json_and_bad_json_is_refused() -> None:
    import json

    d = Design.alternating(("rest", "task"), 4, 10, start=1)
    assert Design.from_dict(json.loads(json.dumps(d.to_dict()))) == d and d.volumes == 10
    assert Design.from_dict({"conditions": ["rest"]}) == Design(("rest",))
    for bad, why in [
        ([], "expected an object"),
        ({"conditions": []}, "non-empty list"),
        ({"conditions": ["a"], "blocks": [{"condition": "a", "onset": 1.5, "volumes": 2}]}, "whole-number"),
        ({"conditions": ["a"], "blocks": [{"condition": "b", "onset": 1, "volumes": 2}]}, "not among"),
        ({"conditions": ["a"], "blocks": [{"condition": "a", "onset": -1, "volumes": 2}]}, "must be >= 0"),
        ({"conditions": ["a"], "blocks": "x"}, "must be a list"),
    ]:
        with pytest.raises(ValueError, match=why):
            Design.from_dict(bad)
