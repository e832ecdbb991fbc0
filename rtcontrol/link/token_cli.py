"""``main.py token create --name NAME [--store FILE]`` (also ``list`` and ``revoke``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rtcontrol.link.tokens import TokenStore


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("create", "list", "revoke"), help="what to do")
    parser.add_argument("--name", help="a name for the console or link this token is for")
    parser.add_argument("--store", type=Path, default=None,
                        help="the server's token file (default: <user data>/tokens.json)")


def run(args: argparse.Namespace) -> int:
    store = TokenStore(args.store)
    try:
        if args.action == "list":
            for name in store.names():
                print(name)
            return 0
        if not args.name:
            print(f"token {args.action}: --name is required", file=sys.stderr)
            return 2
        if args.action == "revoke":
            if store.revoke(args.name):
                print(f"revoked {args.name!r} in {store.path}")
                return 0
            print(f"token revoke: no token named {args.name!r} in {store.path}", file=sys.stderr)
            return 1
        token = store.create(args.name)
    except (ValueError, OSError) as exc:
        print(f"token: {exc}", file=sys.stderr)
        return 2
    print(token)
    print(f"(stored hashed as {args.name!r} in {store.path}; this is the only time it is shown)", file=sys.stderr)
    return 0
