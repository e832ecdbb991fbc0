"""``python -m rtcontrol.recording``: list and finish interrupted runs (what the console offers at start).

    python -m rtcontrol.recording list runs/            runs whose BIDS files were never written
    python -m rtcontrol.recording finish runs/          write them all (or name one run folder)
    python -m rtcontrol.recording finish runs/X --bids /data/bids

In the bundle: ``rtcontrol -m rtcontrol.recording list runs/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rtcontrol.recording.journal import JOURNAL, read_journal
from rtcontrol.recording.recorder import RecordingError, find_interrupted, recover, summarize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rtcontrol.recording", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("list", "finish"))
    parser.add_argument("folder", type=Path,
                        help="the runs folder (./runs by default in the console), or one run folder")
    parser.add_argument("--bids", type=Path, default=None, help="BIDS dataset to write into (default: <runs>/bids)")
    args = parser.parse_args(argv)
    runs = [args.folder] if (args.folder / JOURNAL).is_file() else find_interrupted(args.folder)
    if not runs:
        print(f"no interrupted run under {args.folder}")
        return 0
    failed = 0
    for run_dir in runs:
        try:
            journal = read_journal(run_dir)
            volumes = len(journal.volumes())
        except (OSError, ValueError) as exc:
            print(f"{run_dir}: unreadable journal: {exc}", file=sys.stderr)
            failed += 1
            continue
        if args.action == "list":
            print(f"{run_dir}: {summarize(run_dir)}")
            continue
        try:
            print(f"{run_dir}: {volumes} volumes -> {recover(run_dir, args.bids)}")
        except RecordingError as exc:
            print(f"{run_dir}: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
