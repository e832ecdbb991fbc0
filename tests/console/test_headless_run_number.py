"""``main.py run``: the run number from the command line (``--run N``, ``--next-run``), and a reused
settings file refused with the flags that fix it (there is no "Next run" button without a window)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from rtcontrol.cli import main
from rtcontrol.console import headless, options

RUN = "sub-01_ses-01_task-feedback_run-{:02d}"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="main.py run")
    headless.add_arguments(parser)
    return parser.parse_args(list(argv))


def recorded(runs: Path, *numbers: int) -> None:
    for n in numbers:
        (runs / RUN.format(n)).mkdir(parents=True)


def test_a_recorded_run_number_names_the_flags_and_starts_nothing(tmp_path: Path, capsys) -> None:
    runs, watch = tmp_path / "runs", tmp_path / "watch"
    watch.mkdir()
    recorded(runs, 1)
    assert main(["run", "--no-gui", "--watch", str(watch), "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert f"run {RUN.format(1)} is already recorded in {runs / RUN.format(1)}" in err
    assert "--next-run" in err and "--run N" in err and "Next run" not in err.replace("--next-run", "")
    assert sorted(p.name for p in runs.iterdir()) == [RUN.format(1)]  # nothing new was started


def test_next_run_takes_the_first_number_not_recorded(tmp_path: Path) -> None:
    runs, watch = tmp_path / "runs", tmp_path / "watch"
    watch.mkdir()
    recorded(runs, 1, 2, 4)
    s = options.settings_from_args(parse("--watch", str(watch), "--runs-dir", str(runs), "--next-run"))
    assert s.run.run == 3 and s.run_id == RUN.format(3)
    s = options.settings_from_args(parse("--watch", str(watch), "--runs-dir", str(runs), "--run", "7"))
    assert s.run.run == 7  # --run N is taken as given
    settings = tmp_path / "run.toml"
    settings.write_text("[run]\nrun = 4\n")
    s = options.settings_from_args(parse("--settings", str(settings), "--runs-dir", str(runs), "--next-run"))
    assert s.run.run == 5  # counts up from the settings' number


def test_run_number_must_be_positive_and_not_both_flags(tmp_path: Path, capsys) -> None:
    assert main(["run", "--no-gui", "--watch", str(tmp_path), "--run", "0"]) == 2
    assert "--run 0: the run number starts at 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["run", "--no-gui", "--watch", str(tmp_path), "--run", "2", "--next-run"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
