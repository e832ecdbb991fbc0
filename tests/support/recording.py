"""Helpers for recording tests: run settings, a recorded synthetic run, the BIDS validator."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from rtcontrol.paths import app_root
from rtcontrol.recording import Recorder
from rtcontrol.scanner.synth import SynthRun

#: The npm bids-validator (v1.x, runs offline under node), pinned with its whole dependency tree by
#: bids_validator/package-lock.json and installed with ``npm ci`` into the git-ignored .cache/.
LOCK_DIR = Path(__file__).parents[1] / "recording" / "bids_validator"


VALIDATOR_PREFIX = app_root() / ".cache" / "bids-validator"


def run_settings(subject: str = "01", run: int = 1, task: str = "nf", tr: float = 1.0) -> dict:
    """Settings as the console passes them (``RunSettings.to_dict()`` shape), with secrets and paths to strip."""
    return {
        "run": {"subject": subject, "session": "01", "run": run, "task": task, "tr": tr, "expected_volumes": 12,
                "watch_folder": "/export/DOE^JANE_19700101"},
        "project": {"name": "template", "settings": {"roi_threshold": 2.5}},
        "worker": {"url": "wss://worker.example:8765", "token": "tok-SECRET-123"},
        "subject": {"url": "", "token": "tok-SECRET-456"},
        "files": {"allowed_folders": ["/export/DOE^JANE_19700101"]},
    }


def validate(validator: list[str], root: Path) -> dict:
    """Run the validator on ``root``; return its JSON report."""
    done = subprocess.run([*validator, str(root), "--json"], capture_output=True, text=True, timeout=300)
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise AssertionError(
            f"bids-validator gave no JSON (exit {done.returncode}):\n{done.stdout}\n{done.stderr}") from None


def issues(report: dict, severity: str = "errors") -> list[str]:
    out = []
    for issue in report["issues"][severity]:
        files = [f["file"]["relativePath"] for f in issue.get("files", []) if f.get("file")]
        out.append(f"{issue['key']}: {issue['reason']} {files[:3]}")
    return out


def record(rec: Recorder, run: SynthRun, indices=None, respond_at=(4,)) -> None:
    """Feed volumes, feedback with motion metrics, later stamps and responses, as the console does."""
    motion = run.truth["motion"]["params"]
    for i in indices if indices is not None else range(run.data.shape[-1]):
        v = run.to_volume(i, run="r1")
        v.timeline.stamp("file_seen")
        v.timeline.stamp("parsed")
        rec.record_volume(v)
        v.timeline.stamp("result_ready")
        v.timeline.stamp("feedback_received")
        metrics = dict(zip(("tx", "ty", "tz", "rx", "ry", "rz"), motion[i]))
        metrics["roi_mean"] = 100.0 + i
        rec.record_feedback("r1", i, {"bar": i / 10} if i == 2 else i / 10, metrics, v.timeline)
        rec.record_timeline("r1", i, {"subject_delivered": time.monotonic(), "displayed": time.monotonic()})
        if i in respond_at:
            rec.record_response("left", index=i, device="button box")
    rec.record_event("note", "operator note", volume=3)
