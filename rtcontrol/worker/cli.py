"""``main.py --worker``: the headless worker that runs experiment projects.

    main.py --worker --host 0.0.0.0 --port 8765 --cert worker.crt --key worker.key \\
        [--tokens tokens.json] [--projects DIR] [--plugins DIR] [--data DIR]

Prints ``WORKER READY url=... fingerprint=...`` once listening (``--port 0`` picks a free port),
then the plugins found (``plugins/`` of the install and each ``--plugins DIR``) and any that failed
to load, with the reason; the console sees the same list when it lists the projects.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from rtcontrol.link import transport
from rtcontrol.link.certs import fingerprint_file, server_context
from rtcontrol.link.tokens import TokenStore
from rtcontrol.worker.cluster import SCHEDULER_ENV, DaskCluster, SchedulerUnreachable, check_reachable
from rtcontrol.worker.malloc import keep_freed_memory
from rtcontrol.worker.projects import ProjectCatalog
from rtcontrol.worker.runner import default_memory_limit, format_mb, parse_memory
from rtcontrol.worker.server import WorkerServer
from rtcontrol.worker.store import default_data_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0 = any free port)")
    parser.add_argument("--cert", type=Path, help="TLS certificate (make one with 'main.py certs')")
    parser.add_argument("--key", type=Path, help="TLS private key")
    parser.add_argument("--tokens", type=Path, default=None,
                        help="token store (default <user data>/tokens.json; add tokens with 'main.py token create')")
    parser.add_argument("--projects", type=Path, action="append", default=[],
                        help="an extra folder of projects (repeatable); projects/ of the install is always searched")
    parser.add_argument("--plugins", type=Path, action="append", default=[],
                        help="an extra folder of plugins (repeatable); plugins/ of the install is always searched")
    parser.add_argument("--data", type=Path, default=None, help=f"where runs are saved (default {default_data_dir()})")
    parser.add_argument("--insecure-loopback", action="store_true",
                        help="serve plain ws:// without TLS (only allowed on a loopback address)")
    parser.add_argument("--max-size-mb", type=float, default=transport.DEFAULT_MAX_SIZE / 2**20,
                        help="largest message accepted, in MiB (default %(default).0f)")
    parser.add_argument("--volume-timeout", type=float, default=30.0,
                        help="seconds a project may take for one volume before its run is stopped (default 30)")
    auto = default_memory_limit()
    parser.add_argument("--run-memory-limit", metavar="SIZE", default=None,
                        help="memory one run's process may hold before that run is stopped: megabytes (2048) or "
                             "with a unit (512MB, 4GB); 0 for no limit (default: half of this machine's memory"
                             + (f", {format_mb(auto)})" if auto else ")"))
    parser.add_argument("--dask-scheduler", default=os.environ.get(SCHEDULER_ENV) or None, metavar="tcp://HOST:PORT",
                        help="a site's Dask scheduler for projects' parallel work (ctx.map/submit); default "
                             f"${SCHEDULER_ENV}, else a local cluster started on first use")
    parser.add_argument("--dask-processes", type=int, default=None, metavar="N",
                        help="processes of that local cluster (default: one per core)")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="stop when standard input closes (used by a console that starts its own worker)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every connection")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        memory_limit = default_memory_limit() if args.run_memory_limit is None else parse_memory(args.run_memory_limit)
    except ValueError as exc:
        print(f"worker: --run-memory-limit {exc}", file=sys.stderr)
        return 2
    if args.cert or args.key:
        if not (args.cert and args.key):
            print("worker: give both --cert and --key", file=sys.stderr)
            return 2
        try:
            ssl_ctx = server_context(args.cert, args.key)
        except ValueError as exc:
            print(f"worker: {exc}", file=sys.stderr)
            return 2
    elif args.insecure_loopback:
        ssl_ctx = None
    else:
        print("worker: TLS needs --cert and --key (make them with 'main.py certs --host NAME'); "
              "or --insecure-loopback for plain ws:// on 127.0.0.1 only", file=sys.stderr)
        return 2
    tokens = TokenStore(args.tokens)
    try:
        if not tokens.names():
            print(f"worker: no tokens in {tokens.path}; create one with 'main.py token create --name NAME'"
                  + (f" --store {args.tokens}" if args.tokens else ""), file=sys.stderr)
            return 2
    except ValueError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    missing = [str(d) for d in args.plugins if not d.is_dir()]
    if missing:
        print(f"worker: --plugins {', '.join(missing)}: no such folder", file=sys.stderr)
        return 2
    plugin_dirs = [d.resolve() for d in args.plugins]
    if plugin_dirs:  # the runs' processes find the same plugins (analysis.plugins.discover)
        from rtcontrol.analysis.plugins import PLUGINS_ENV  # (the worker itself never imports plugin code)

        os.environ[PLUGINS_ENV] = os.pathsep.join(str(d) for d in plugin_dirs)
    try:
        if args.dask_processes is not None and args.dask_processes < 1:
            raise ValueError(f"--dask-processes must be at least 1, not {args.dask_processes}")
        dask = DaskCluster(args.dask_scheduler, args.dask_processes)
        if args.dask_scheduler:
            asyncio.run(check_reachable(args.dask_scheduler))
    except (ValueError, SchedulerUnreachable) as exc:
        print(f"worker: {exc} (--dask-scheduler / ${SCHEDULER_ENV})", file=sys.stderr)
        return 2
    server = WorkerServer(
        tokens=tokens, ssl_context=ssl_ctx, catalog=ProjectCatalog(args.projects), data_dir=args.data,
        insecure_loopback=args.insecure_loopback, max_size=int(args.max_size_mb * 2**20),
        volume_timeout=args.volume_timeout, plugin_dirs=plugin_dirs, run_memory_limit=memory_limit, dask=dask,
    )
    try:
        keep_freed_memory()  # no page faults per volume (see rtcontrol.worker.malloc)
        return asyncio.run(_serve(server, args, ssl_ctx is not None))
    except transport.LinkError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"worker: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2


async def _serve(server: WorkerServer, args: argparse.Namespace, tls: bool) -> int:
    port = await server.start(args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    if args.exit_with_parent:
        _stop_when_stdin_closes(loop, stop)
    scheme = "wss" if tls else "ws"
    fp = fingerprint_file(args.cert) if tls else "none"
    print(f"WORKER READY url={scheme}://{args.host}:{port} fingerprint={fp}", flush=True)
    print(f"projects: {', '.join(server.catalog.folders()) or 'none found'}; runs saved in {server.data_dir}",
          flush=True)
    limit = server.run_memory_limit
    print(f"memory per run: {format_mb(limit) + ' (--run-memory-limit)' if limit else 'no limit'}", flush=True)
    scan = asyncio.create_task(_print_plugins(server))
    await stop.wait()
    scan.cancel()
    await server.close()
    return 0


async def _print_plugins(server: WorkerServer) -> None:
    """Once the start-up scan is done: what was found, and each plugin that failed and why."""
    found = await server.plugins()
    names = [f"{p['name']} ({p['kind']})" for p in found["plugins"]]
    print(f"plugins: {', '.join(names) or 'none found'} (in {', '.join(map(str, server.plugin_folders))})", flush=True)
    for e in found["errors"]:
        print(f"plugin failed to load: {e['error']} ({e['source']})", flush=True)


def _stop_when_stdin_closes(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """The parent holds our stdin pipe; EOF means it is gone (even after SIGKILL), so we go too."""

    def wait_for_eof() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_eof, name="parent-watch", daemon=True).start()
