"""``main.py certs --host NAME_OR_IP [--host ...] [--out DIR] [--days N]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rtcontrol.link.certs import make_certificate
from rtcontrol.paths import user_data_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", action="append", required=True, metavar="NAME_OR_IP",
                        help="a name or IP address the console will dial (repeat for several)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the key and certificate "
                        "(default: <user data>/certs)")
    parser.add_argument("--name", default="rtcontrol", help="file name stem (default: rtcontrol)")
    parser.add_argument("--days", type=int, default=825, help="validity in days (default: 825)")


def run(args: argparse.Namespace) -> int:
    out = args.out or user_data_dir() / "certs"
    try:
        files = make_certificate(args.host, out, days=args.days, name=args.name)
    except (ValueError, OSError) as exc:
        print(f"certs: {exc}", file=sys.stderr)
        return 2
    print(f"certificate: {files.cert}")
    print(f"private key: {files.key}  (keep it on this machine; mode 600)")
    print(f"hosts:       {', '.join(args.host)}")
    print(f"fingerprint: {files.fingerprint}")
    print("Compare this fingerprint with the one the console shows on first connection.")
    return 0
