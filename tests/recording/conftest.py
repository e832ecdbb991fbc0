"""Recording test helpers: synthetic and real volumes, and the BIDS validator (npm, pinned, installed on first use)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from rtcontrol.scanner.synth import SynthRun, SynthSpec, generate
from tests.support.recording import LOCK_DIR, VALIDATOR_PREFIX


@pytest.fixture(scope="session")
def synth_run() -> SynthRun:
    """A small synthetic run with known motion (16x16x10, 12 volumes, TR 1 s)."""
    return generate(SynthSpec(volumes=12, tr=1.0, shape=(16, 16, 10), block_volumes=3, seed=3))


@pytest.fixture(scope="session")
def bids_validator() -> list[str]:
    """The validator command; installed with npm on first use (or when the lock changed).
    Skips only without node/npm."""
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


