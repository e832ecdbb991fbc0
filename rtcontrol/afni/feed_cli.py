"""``main.py afni-feed SERIES``: send a NIfTI file or a DICOM series to AFNI's realtime plugin.

Like AFNI's ``rtfeedme``: waits for AFNI (``afni -rt``), sends the metadata block and every
volume (optionally ``--dt`` ms apart), and closes the data channel so AFNI saves the dataset.
Several series in a folder become several AFNI runs. ``--motion-port`` also listens for AFNI's
realtime motion estimates (``AFNI_REALTIME_MP_HOST_PORT``) and prints them per TR.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from rtcontrol.afni import protocol
from rtcontrol.afni.channel import ChannelSettings
from rtcontrol.afni.motion import MotionBye, MotionHello, MotionReceiver, MotionRecord
from rtcontrol.afni.sender import AfniSender, SenderEvent, SenderSettings
from rtcontrol.afni.source import load_source


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("series", type=Path, help="a NIfTI file (3-D or 4-D) or a folder with a DICOM series")
    parser.add_argument("--host", default="127.0.0.1", help="host running 'afni -rt' (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=protocol.DEFAULT_CONTROL_PORT,
        help=f"AFNI's realtime control port (default {protocol.DEFAULT_CONTROL_PORT}; very old AFNI: 7954)",
    )  # fmt: skip
    parser.add_argument(
        "--data-port", type=int, default=protocol.DEFAULT_DATA_PORT,
        help=f"data port AFNI is told to open (default {protocol.DEFAULT_DATA_PORT})",
    )  # fmt: skip
    parser.add_argument(
        "--shm", nargs="?", const="grv:1M", metavar="NAME[:SIZE]",
        help="use shared memory instead of TCP (AFNI on this machine), e.g. grv:1M (the default)",
    )  # fmt: skip
    parser.add_argument("--port-offset", type=int, default=0, help="AFNI_PORT_OFFSET of that AFNI (shm key)")
    parser.add_argument("--dt", type=float, default=0.0, metavar="MS", help="pause between volumes in ms (0)")
    parser.add_argument("--tr", type=float, help="TR in seconds when the input does not say (or to override it)")
    parser.add_argument("--prefix", help="AFNI dataset prefix (default: the series name)")
    parser.add_argument("--note", help="note attached to the AFNI dataset")
    parser.add_argument("--no-slice-timing", action="store_true", help="send 3D+t even when slice times are known")
    parser.add_argument("--series-name", help="only this series of a folder (see --list)")
    parser.add_argument("--list", action="store_true", help="list the series found and exit")
    parser.add_argument(
        "--keep-connection", action="store_true",
        help="separate runs with AFNI's end-of-run image instead of reconnecting",
    )  # fmt: skip
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for AFNI to accept (60)")
    parser.add_argument("--motion-port", type=int, help="listen here for AFNI_REALTIME_MP_HOST_PORT and print motion")
    parser.add_argument(
        "--motion-host", help="address to listen on for motion (default: loopback for a local AFNI, else all)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only problems and the summary")


def _channel(args: argparse.Namespace) -> ChannelSettings:
    shm_name, shm_size = None, 1024 * 1024
    if args.shm:
        name, _, size = args.shm.partition(":")
        shm_name, shm_size = name, protocol.parse_size(size) if size else shm_size
        protocol.shm_spec(shm_name, shm_size)  # validates
    return ChannelSettings(
        host=args.host,
        control_port=args.port,
        data_port=args.data_port,
        shm_name=shm_name,
        shm_size=shm_size,
        port_offset=args.port_offset,
    )


_last_state: list[str] = [""]


def _print_event(event: SenderEvent, quiet: bool) -> None:
    if event.kind == "state":
        if event.message.startswith("connecting") or event.message == _last_state[0]:
            return  # retries: say each distinct problem once
        _last_state[0] = event.message
    if event.kind == "header" and not quiet:
        print(f"--- metadata for AFNI ({event.message}):\n{event.header}", end="", flush=True)
    elif event.kind == "sent" and not quiet:
        print(f"sent volume {event.index} of {event.run} ({event.nbytes} bytes)", flush=True)
    elif event.kind == "not_sent":
        print(f"NOT sent: volume {event.index} of {event.run}: {event.message}", file=sys.stderr, flush=True)
    elif event.kind in ("warning", "error"):
        print(f"{event.kind}: {event.message}", file=sys.stderr, flush=True)
    elif event.kind in ("state", "run_end") and not quiet:
        print(f"[{event.kind}] {event.message}", flush=True)


def _print_motion(event) -> None:
    if isinstance(event, MotionHello):
        print(f"AFNI motion channel: version {event.version}, {event.floats_per_tr} values per TR", flush=True)
    elif isinstance(event, MotionRecord):
        values = " ".join(f"{v:8.4f}" for v in event.motion)
        extra = f"  +{len(event.extras)} values" if event.extras else ""
        print(f"AFNI motion TR {event.tr_index:3d}: {values}{extra}", flush=True)
    elif isinstance(event, MotionBye):
        print(f"AFNI motion channel: end of run after {event.records} TRs", flush=True)


async def _feed(args: argparse.Namespace, runs: dict) -> int:
    total = sum(len(v) for v in runs.values())
    done = asyncio.Event()
    processed = 0

    def on_event(event: SenderEvent) -> None:
        nonlocal processed
        _print_event(event, args.quiet)
        if event.kind in ("sent", "not_sent"):
            processed += 1
            done.set()

    settings = SenderSettings(
        channel=_channel(args),
        header=protocol.HeaderOptions(
            prefix=args.prefix, note=args.note, tr=args.tr, slice_timing=not args.no_slice_timing
        ),
        keep_connection=args.keep_connection,
        queue_size=total + 2,
        retry_interval=0.5,
        wait_for_afni=args.wait,
        header_pause=0.128,  # as rtfeedme
    )
    sender = AfniSender(settings, on_event)
    bye = asyncio.Event()
    motion = None
    if args.motion_port is not None:

        def on_motion(event) -> None:
            _print_motion(event)
            if isinstance(event, MotionBye):
                bye.set()

        listen = args.motion_host or ("127.0.0.1" if args.host in ("127.0.0.1", "localhost", "::1") else "0.0.0.0")
        motion = MotionReceiver(on_motion, listen, args.motion_port, on_error=print)
        port = await motion.start()
        print(f"listening for AFNI motion on {listen}:{port}", flush=True)
    await sender.start()
    try:
        for r, (_name, volumes) in enumerate(runs.items()):
            for volume in volumes:
                before = processed
                done.clear()
                sender.submit(volume)
                while processed == before:  # one at a time: report and pace like rtfeedme
                    await done.wait()
                    done.clear()
                if sender.status.volumes_sent == 0 and sender.status.volumes_not_sent:
                    print(f"afni-feed: AFNI did not accept within {args.wait:g} s; giving up", file=sys.stderr)
                    return 1
                if args.dt > 0:
                    await asyncio.sleep(args.dt / 1000.0)
            if r < len(runs) - 1:
                sender.end_run()
        await sender.close(timeout=30)
        if motion is not None and not bye.is_set():
            try:
                await asyncio.wait_for(bye.wait(), 5)
            except TimeoutError:
                pass
    finally:
        await sender.close(timeout=2)  # also on SIGTERM / Ctrl-C: the shm segment is removed
        if motion is not None:
            await motion.close()
    status = sender.status
    print(f"AFNI: {status.volumes_sent} of {total} volumes sent, {status.runs_started} run(s)", flush=True)
    return 0 if status.volumes_sent == total else 1


async def _main(args: argparse.Namespace, runs: dict) -> int:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            loop.add_signal_handler(sig, task.cancel)  # type: ignore[union-attr]
        except (NotImplementedError, RuntimeError):
            pass
    try:
        return await _feed(args, runs)
    except asyncio.CancelledError:
        print("afni-feed: stopped by a signal; data channel closed", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    try:
        runs = load_source(args.series)
    except (OSError, ValueError) as exc:
        print(f"afni-feed: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for name, volumes in runs.items():
            v = volumes[0]
            print(f"{name}: {len(volumes)} volumes of {v.shape}, {v.data.dtype}, TR {v.tr}")
        return 0
    if args.series_name:
        if args.series_name not in runs:
            print(f"afni-feed: no series {args.series_name!r}; found: {', '.join(runs)}", file=sys.stderr)
            return 2
        runs = {args.series_name: runs[args.series_name]}
    try:
        _channel(args)
    except ValueError as exc:
        print(f"afni-feed: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(args, runs))
    except KeyboardInterrupt:
        return 130
