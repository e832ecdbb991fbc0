"""Run settings: the shipped defaults load, a round trip keeps every value, bad input names the key."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from rtcontrol.console import settings as S


def test_shipped_defaults_load_and_validate() -> None:
    s = S.default_settings()
    assert s.run.tr > 0
    assert s.feedback.onset in S.ONSET_MODES
    assert s.run_id == f"sub-{s.run.subject}_ses-{s.run.session}_task-{s.run.task}_run-{s.run.run:02d}"


def test_round_trip_keeps_every_value(tmp_path: Path) -> None:
    s = S.RunSettings()
    s = s.with_values("run", subject="07", tr=0.8, expected_volumes=300, watch_folder="/data/export")
    s = replace(s, project=S.ProjectSection("roi_feedback", {"threshold": 0.5, "box": [1.0, 2.0, 3.0]}))
    s = s.with_values("files", allowed_folders=("/data/masks",))
    s = s.with_values("feedback", onset="delay", delay=1.5)
    s = s.with_values("worker", url="wss://worker.example.org:8765", fingerprint="SHA256:" + ":".join(["AB"] * 32))
    path = S.save(s, tmp_path / "run.toml")
    assert S.load(path) == s
    assert "roi_feedback" in path.read_text()


def test_next_run_counts_up() -> None:
    s = S.RunSettings()
    assert s.next_run().run.run == s.run.run + 1
    assert s.next_run().run_id.endswith("run-02")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[run]\ntr = -1\n", "[run] tr = -1.0"),
        ("[run]\ntr = 'fast'\n", "[run] tr = 'fast': use a number"),
        ("[run]\nsubject = 'sub 01'\n", "letters and digits"),
        ("[run]\nspeed = 3\n", "[run] unknown key(s) speed"),
        ("[scanner]\nx = 1\n", "unknown section(s) [scanner]"),
        ("[feedback]\nonset = 'later'\n", "[feedback] onset = 'later'"),
        ("[feedback]\ndelay = -0.5\n", "cannot be negative"),
        ("[worker]\nurl = 'http://x'\n", "use wss://host:port"),
        ("[subject]\nfingerprint = 'SHA256:AB'\n", "[subject] fingerprint = 'SHA256:AB': not a SHA-256 fingerprint"),
        ("[afni]\ndata_port = 70000\n", "not a TCP port"),
        ("[run\n", "not valid TOML"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(S.SettingsError) as info:
        S.load(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(S.SettingsError, match="no such settings file"):
        S.load(tmp_path / "nope.toml")
