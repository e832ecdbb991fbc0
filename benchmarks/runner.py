"""``main.py bench [NAME ...]``: run every benchmark module in this package and print BENCH lines."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback

import benchmarks as package

SKIP = {"runner", "stats"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="benchmark modules to run (default: all)")


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name not in SKIP)


def run(args: argparse.Namespace) -> int:
    names = args.names or available()
    failed = 0
    for name in names:
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            for figure in module.bench():
                print(figure.line(), flush=True)
        except Exception:  # a broken benchmark must not hide the others
            failed += 1
            print(f"BENCH {name} error=1", flush=True)
            traceback.print_exc(file=sys.stderr)
    return 1 if failed else 0
