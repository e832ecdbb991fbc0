"""What the worker keeps of each run: the settings used, every feedback value with its
timeline (JSON lines), and the project's log."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from rtcontrol.paths import user_data_dir


def default_data_dir() -> Path:
    return user_data_dir() / "worker-runs"


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "run"


class RunStore:
    """``<data>/<UTC time>_<run>/`` with ``settings.json``, ``feedback.jsonl``, ``project.log``."""

    def __init__(self, data_dir: Path, run: str) -> None:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        self.dir = Path(data_dir) / f"{stamp}_{safe_name(run)}"
        self.dir.mkdir(parents=True, exist_ok=False)
        self._feedback = open(self.dir / "feedback.jsonl", "a", buffering=1, encoding="utf-8")
        self._log = open(self.dir / "project.log", "a", buffering=1, encoding="utf-8")

    def save_settings(self, info: dict[str, Any]) -> None:
        (self.dir / "settings.json").write_text(json.dumps(info, indent=2, default=str) + "\n")

    def feedback(self, record: dict[str, Any]) -> None:
        if self._feedback.closed:
            return
        self._feedback.write(json.dumps(record, separators=(",", ":")) + "\n")

    def log(self, level: str, message: str) -> None:
        if self._log.closed:
            return
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
        for line in message.splitlines() or [""]:
            self._log.write(f"{now} {level:<7} {line}\n")

    def close(self) -> None:
        self._feedback.close()
        self._log.close()
