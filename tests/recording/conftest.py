"""Recording test helpers: synthetic and real volumes, and the BIDS validator (npm, pinned, installed on first use)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from rtcontrol.paths import app_root
from rtcontrol.scanner.synth import SynthRun, SynthSpec, generate

#: The npm bids-validator (v1.x, runs offline under node), pinned with its whole dependency tree by
#: bids_validator/package-lock.json and installed with ``npm ci`` into the git-ignored .cache/.
LOCK_DIR = Path(__file__).with_name("bids_validator")
VALIDATOR_PREFIX = app_root() / ".cache" / "bids-validator"


@pytest.fixture(scope="session")
def synth_run() -> SynthRun:
    """A small synthetic run with known motion (16x16x10, 12 volumes, TR 1 s)."""
    return generate(SynthSpec(volumes=12, tr=1.0, shape=(16, 16, 10), block_volumes=3, seed=3))


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


@pytest.fixture(scope="session")
def bids_validator() -> list[str]:
    """The validator command; installed with npm on first use (or when the lock changed). Skips only without
    node/npm."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node and npm are needed for the BIDS validator (Debian: apt-get install nodejs npm)")
    script = VALIDATOR_PREFIX / "node_modules" / "bids-validator" / "bin" / "bids-validator"
    lock = (LOCK_DIR / "package-lock.json").read_bytes()
    installed = VALIDATOR_PREFIX / "package-lock.json"
    if not script.is_file() or not installed.is_file() or installed.read_bytes() != lock:
        VALIDATOR_PREFIX.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(LOCK_DIR / name, VALIDATOR_PREFIX / name)
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=VALIDATOR_PREFIX,
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not script.is_file():
            pytest.fail(f"npm ci of the pinned bids-validator in {VALIDATOR_PREFIX} failed:\n"
                        f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return [node, str(script)]


def validate(validator: list[str], root: Path) -> dict:
    """Run the validator on ``root``; return its JSON report."""
    done = subprocess.run([*validator, str(root), "--json"], capture_output=True, text=True, timeout=300)
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"bids-validator gave no JSON (exit {done.returncode}):\n"
                             f"{done.stdout}\n{done.stderr}") from None


def issues(report: dict, severity: str = "errors") -> list[str]:
    out = []
    for issue in report["issues"][severity]:
        files = [f["file"]["relativePath"] for f in issue.get("files", []) if f.get("file")]
        out.append(f"{issue['key']}: {issue['reason']} {files[:3]}")
    return out
