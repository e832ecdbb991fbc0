"""The real jsPsych library for the agent's page, installed with npm into ``resources/jspsych/vendor``.

Optional: without it the page runs its built-in trial runner (``mini-jspsych.js``). Install once on the
presentation PC while it has network (``python main.py --subject --install-jspsych``); the page then works
offline. The folder is git-ignored.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from rtcontrol.paths import resources_dir

JSPSYCH_SPEC = "jspsych@8"


def vendor_dir() -> Path:
    return resources_dir() / "jspsych" / "vendor"


def jspsych_script() -> Path:
    return vendor_dir() / "node_modules" / "jspsych" / "dist" / "index.browser.js"


def install_jspsych(timeout: float = 300.0) -> Path:
    """Run ``npm install`` for jsPsych (no-op if present); return the browser bundle's path."""
    if jspsych_script().exists():
        return jspsych_script()
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed (Debian: apt-get install npm); the page will use its built-in runner")
    cmd = [npm, "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(vendor_dir()), JSPSYCH_SPEC]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"npm install {JSPSYCH_SPEC} took more than {timeout:.0f} s") from None
    if proc.returncode != 0 or not jspsych_script().exists():
        raise RuntimeError(f"npm install {JSPSYCH_SPEC} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return jspsych_script()
