"""What the worker keeps of each run: the settings used, every feedback value with its
timeline (JSON lines), and the project's log.

A run started again after the worker restarted mid-run (the console replays its volumes) is saved
in a folder of its own, ``<UTC time>_restart<N>_<run>``, never mixed with the lost worker's partial
save: its ``restart.json`` says it is the N-th restart and names the partial save it replaces,
and that partial save (when it is in the same data folder) gets a ``superseded.json`` naming the
folder that holds the whole run. Every run's folder name ends in ``_<run>``."""

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
    """``<data>/<UTC time>[_restart<N>]_<run>/`` with ``settings.json``, ``feedback.jsonl``, ``project.log``."""

    def __init__(self, data_dir: Path, run: str, restart: int = 0) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        self.dir = Path(data_dir) / f"{stamp}{f'_restart{restart}' if restart else ''}_{safe_name(run)}"
        self.dir.mkdir(parents=True, exist_ok=False)
        self._feedback = open(self.dir / "feedback.jsonl", "a", buffering=1, encoding="utf-8")
        self._log = open(self.dir / "project.log", "a", buffering=1, encoding="utf-8")

    def save_settings(self, info: dict[str, Any]) -> None:
        (self.dir / "settings.json").write_text(json.dumps(info, indent=2, default=str) + "\n")

    def note_restart(self, run: str, count: int, previous: str) -> None:
        """Say that this run is the ``count``-th restart of ``run``, and which partial save it replaces.

        ``previous`` is the lost worker's folder as the console knows it; only its name is used, and
        it is marked only if it is a folder of this run in this store's data folder."""
        name = Path(str(previous or "")).name
        old = self.dir.parent / name if name else None
        if old is None or old == self.dir or not old.is_dir() or not name.endswith(f"_{safe_name(run)}"):
            old = None
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        (self.dir / "restart.json").write_text(json.dumps({
            "run": run, "restart": count, "started": now, "replaces": name or None,
            "replaces_found_here": old is not None,
            "about": "the worker restarted mid-run; the console started the run again here and replayed its "
                     "volumes from the start, so this folder holds the whole run (feedback for the replayed "
                     "volumes was catch-up on the console: recorded there, not shown to the subject)",
        }, indent=2) + "\n")
        if old is not None:
            (old / "superseded.json").write_text(json.dumps({
                "run": run, "superseded_by": self.dir.name, "noted": now,
                "about": "the worker running this run stopped mid-run (killed or crashed): this folder ends "
                         "where it stopped; the run was started again and saved whole in superseded_by",
            }, indent=2) + "\n")

    def feedback(self, record: dict[str, Any]) -> None:
        if self._feedback.closed:
            return
        self._feedback.write(json.dumps(record, separators=(",", ":")) + "\n")

    def log(self, level: str, message: str) -> None:
        if self._log.closed:
            return
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        for line in message.splitlines() or [""]:
            self._log.write(f"{now} {level:<7} {line}\n")

    def close(self) -> None:
        self._feedback.close()
        self._log.close()
