"""``main.py --subject``: the subject agent on the presentation PC.

It serves the console link (wss, pinned certificate, token), the jsPsych page and local websocket
(``--local-port``), newline-delimited JSON (``--tcp-port``), and with ``--display`` the built-in full-screen
feedback display. It keeps running across runs and console reconnects until stopped (Ctrl+C).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from pathlib import Path

from rtcontrol.link.certs import fingerprint_file, make_certificate, server_context
from rtcontrol.link.tokens import TokenStore
from rtcontrol.link.transport import LinkError, is_loopback
from rtcontrol.paths import user_data_dir
from rtcontrol.subject import secret as consumer_secret
from rtcontrol.subject.agent import SubjectAgent
from rtcontrol.subject.client import DEFAULT_LOCAL_PORT
from rtcontrol.subject.local import page_url
from rtcontrol.subject.server import start_agent

DEFAULT_PORT = 8740
DEFAULT_TCP_PORT = 8742

log = logging.getLogger("rtcontrol.subject")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="0.0.0.0",
                        help="address the console dials (default 0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"console link port (default {DEFAULT_PORT})")
    parser.add_argument("--cert", type=Path, help="TLS certificate (main.py certs); default: made on first use")
    parser.add_argument("--key", type=Path, help="TLS private key for --cert")
    parser.add_argument("--tokens", type=Path, default=None,
                        help="token store (main.py token create --store FILE); default <user data>/tokens.json")
    parser.add_argument("--insecure-loopback", action="store_true",
                        help="plain ws:// without TLS; only allowed with --host 127.0.0.1")
    parser.add_argument("--display", action="store_true", help="show the built-in feedback display")
    parser.add_argument("--screen", type=int, default=None, help="screen number for the display (default: last)")
    parser.add_argument("--windowed", action="store_true", help="display in a window instead of full screen")
    parser.add_argument("--tcp-port", type=int, default=DEFAULT_TCP_PORT,
                        help=f"NDJSON port on 127.0.0.1 for PsychToolbox/MATLAB (default {DEFAULT_TCP_PORT}; -1 off)")
    parser.add_argument("--local-port", type=int, default=DEFAULT_LOCAL_PORT,
                        help=f"HTTP + websocket port on 127.0.0.1 for jsPsych and FeedbackClient "
                             f"(default {DEFAULT_LOCAL_PORT}; -1 off)")
    parser.add_argument("--install-jspsych", action="store_true",
                        help="install jsPsych for the page with npm (once, needs network), then exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every connection and refusal")


def _certificate(args: argparse.Namespace) -> tuple[Path, Path, str]:
    if (args.cert is None) != (args.key is None):
        raise ValueError("give both --cert and --key, or neither (a certificate is then made on first use)")
    if args.cert is not None:
        return args.cert, args.key, fingerprint_file(args.cert)
    folder = user_data_dir() / "subject"
    cert, key = folder / "subject.crt", folder / "subject.key"
    if cert.exists() and key.exists():
        return cert, key, fingerprint_file(cert)
    hosts = [socket.gethostname(), "127.0.0.1", "localhost"]
    if args.host not in ("0.0.0.0", "::") and args.host not in hosts:
        hosts.insert(0, args.host)
    made = make_certificate(hosts, folder, name="subject")
    print(f"made a certificate for {', '.join(hosts)} in {folder}", file=sys.stderr)
    return made.cert, made.key, made.fingerprint


async def serve(args: argparse.Namespace, on_ready=None) -> int:
    """Run until cancelled; ``on_ready(agent)`` is called once the servers listen (the display hooks in)."""
    store = TokenStore(args.tokens)
    ssl_context = None
    fingerprint = None
    if args.insecure_loopback:
        if not is_loopback(args.host):
            raise LinkError(f"--insecure-loopback needs --host 127.0.0.1, not {args.host!r}")
    else:
        cert, key, fingerprint = _certificate(args)
        ssl_context = server_context(cert, key)
    if not store.names():
        print(f"warning: no tokens in {store.path}; every console is refused until you run\n"
              f"  python main.py token create --name console" + (f" --store {args.tokens}" if args.tokens else ""),
              file=sys.stderr)
    secret_path = consumer_secret.default_path()
    try:
        secret = consumer_secret.load_or_create(secret_path)
    except (OSError, consumer_secret.SecretError) as exc:
        raise ValueError(f"cannot make the consumer secret {secret_path}: {exc}") from None
    agent = SubjectAgent()
    running = await start_agent(
        agent, host=args.host, port=args.port, tokens=store, ssl_context=ssl_context,
        insecure_loopback=args.insecure_loopback,
        tcp_port=None if args.tcp_port < 0 else args.tcp_port,
        local_port=None if args.local_port < 0 else args.local_port,
        consumer_secret=secret,
    )
    scheme = "ws" if ssl_context is None else "wss"
    print(f"subject agent: console link {scheme}://{args.host}:{running.console_port}", flush=True)
    if fingerprint:
        print(f"  certificate fingerprint {fingerprint}", flush=True)
    if running.local_port is not None or running.tcp_port is not None:
        print(f"  consumer secret (stimulus programs send it in their hello): {secret_path}", flush=True)
    if running.local_port is not None:
        print(f"  jsPsych page {page_url(running.local_port, secret)}  websocket ws://127.0.0.1:{running.local_port}/ws",
              flush=True)
    if running.tcp_port is not None:
        print(f"  NDJSON for PsychToolbox/MATLAB on 127.0.0.1:{running.tcp_port}", flush=True)
    try:
        if on_ready is not None:
            on_ready(agent)
        await asyncio.Event().wait()  # until cancelled (Ctrl+C, window closed)
    finally:
        await running.close()
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    if args.install_jspsych:
        from rtcontrol.subject.vendor import install_jspsych

        try:
            print(f"jsPsych ready: {install_jspsych()}")
            return 0
        except RuntimeError as exc:
            print(f"main.py --subject --install-jspsych: {exc}", file=sys.stderr)
            return 1
    try:
        if args.display:
            from rtcontrol.subject.display import run_with_display  # Qt only when asked for

            return run_with_display(args, serve)
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 0
    except (ValueError, OSError, LinkError) as exc:
        print(f"main.py --subject: {exc}", file=sys.stderr)
        return 2
