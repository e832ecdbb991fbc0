"""``FeedbackClient``: feedback for PsychoPy or any Python stimulus script, without asyncio.

A background thread keeps a websocket to the subject agent on this PC (``ws://127.0.0.1:PORT/ws``) and
reconnects if the agent restarts; the script's frame loop calls the non-blocking :meth:`latest` or waits
with :meth:`wait_for`. It says the agent's consumer secret in its hello, read by default from
``consumer.secret`` in the rtcontrol home (``$RTCONTROL_HOME`` or ``~/.rtcontrol``) where the agent on this
PC keeps it; ``secret=`` or ``secret_file=`` give another. Only the standard library and ``websockets`` are
needed (no PsychoPy, no Qt)::

    from rtcontrol.subject import FeedbackClient
    with FeedbackClient() as fb:
        value = fb.wait_for(volume=5, timeout=3.0).value
        fb.send_response(button=1)
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from rtcontrol.subject.secret import SecretError, read_secret

log = logging.getLogger(__name__)

DEFAULT_LOCAL_PORT = 8741


@dataclass(frozen=True)
class FeedbackValue:
    run: str
    index: int
    value: Any
    late: bool
    received: float  # time.monotonic() in this process when it arrived


class FeedbackClient:
    """Synchronous view of the agent's feedback stream; thread-safe."""

    def __init__(self, port: int = DEFAULT_LOCAL_PORT, host: str = "127.0.0.1", *, url: str | None = None,
                 name: str = "python", connect_timeout: float = 5.0, keep: int = 10_000,
                 secret: str | None = None, secret_file: Path | str | None = None) -> None:
        self.url = url or f"ws://{host}:{port}/ws"
        self._hello = name  # how this program is named in the console's per-consumer stamps
        self._secret = secret
        self._secret_file = secret_file
        self._refused: str | None = None  # why the agent (or the secret file) stopped us for good
        self._cond = threading.Condition()
        self._values: dict[tuple[str, int], FeedbackValue] = {}
        self._order: deque[tuple[str, int]] = deque()
        self._keep = keep
        self._latest: FeedbackValue | None = None
        self._messages: deque[dict[str, Any]] = deque(maxlen=1000)
        self._errors: deque[str] = deque(maxlen=100)
        self.run: dict[str, Any] | None = None  # settings of the run in progress (from run_start)
        self.name: str | None = None
        self._ws: ClientConnection | None = None
        self._closing = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rtcontrol-feedback", daemon=True)
        self._thread.start()
        if not self._connected.wait(connect_timeout) or self._refused:
            self.close()
            if self._refused:
                raise ConnectionError(f"the subject agent at {self.url} refused this program: {self._refused}")
            raise ConnectionError(
                f"no subject agent at {self.url} after {connect_timeout:g} s; start it with "
                "'python main.py --subject' (its --local-port must match)"
            )

    # ----------------------------------------------------------------------------- the script's side

    def latest(self) -> FeedbackValue | None:
        """The newest feedback value (or None); never blocks."""
        with self._cond:
            return self._latest

    def wait_for(self, volume: int, timeout: float | None = None, run: str | None = None) -> FeedbackValue:
        """Block until feedback for ``volume`` (of ``run``, default: the current or any run) arrives."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                found = self._find(volume, run)
                if found is not None:
                    return found
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no feedback for volume {volume} within {timeout} s")
                self._cond.wait(remaining)

    def messages(self) -> list[dict[str, Any]]:
        """Messages (instructions, "rest", "run over", run start/stop) since the last call."""
        with self._cond:
            out = list(self._messages)
            self._messages.clear()
            return out

    def errors(self) -> list[str]:
        """Errors the agent reported about what this client sent."""
        with self._cond:
            out = list(self._errors)
            self._errors.clear()
            return out

    def send_response(self, data: dict[str, Any] | None = None, **fields: Any) -> None:
        """A button press or rating, passed on to the experiment's project: ``send_response(button=1)``."""
        self._send({**(data or {}), **fields, "type": "response"})

    def displayed(self, index: int, run: str | None = None) -> None:
        """Report that feedback for ``index`` is on screen now (stamps ``displayed`` on the console)."""
        run = run or (self._latest.run if self._latest else None)
        self._send({"type": "displayed", "run": run, "index": index})

    def close(self) -> None:
        self._closing.set()
        ws = self._ws
        if ws is not None:
            ws.close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def __enter__(self) -> FeedbackClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------- internals

    def _find(self, volume: int, run: str | None) -> FeedbackValue | None:
        if run is None and self.run is not None:
            run = self.run.get("run")
        if run is not None:
            return self._values.get((run, volume))
        for key in reversed(self._order):
            if key[1] == volume:
                return self._values[key]
        return None

    def _send(self, msg: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None:
            raise ConnectionError(f"not connected to the subject agent at {self.url}")
        ws.send(json.dumps(msg, separators=(",", ":"), allow_nan=False))

    def _secret_now(self) -> str:
        """The secret to say: given, or read from the file at each connection (a restarted agent may have
        made a new one)."""
        return self._secret if self._secret is not None else read_secret(self._secret_file)

    def _loop(self) -> None:
        backoff = 0.1
        while not self._closing.is_set():
            try:
                secret = self._secret_now()
                with connect(self.url, open_timeout=2.0, compression=None, max_size=1 << 20) as ws:
                    ws.send(json.dumps({"type": "hello", "name": self._hello, "secret": secret}))
                    first = json.loads(ws.recv(timeout=5.0))
                    if first.get("type") != "hello":  # refused: a wrong secret does not get better by retrying
                        self._refused = str(first.get("message") or first)
                        self._give_up(self._refused)
                        return
                    self._ws = ws
                    backoff = 0.1
                    self._on_message(first)
                    self._connected.set()
                    for raw in ws:
                        self._on_message(json.loads(raw))
            except SecretError as exc:
                if not self._connected.is_set():
                    self._refused = str(exc)
                    self._give_up(self._refused)
                    return
                log.info("feedback link to %s: %s; retrying", self.url, exc)
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
                if not self._closing.is_set():
                    log.info("feedback link to %s lost (%s); retrying", self.url, exc)
            except InvalidURI:
                raise
            finally:
                self._ws = None
            self._closing.wait(backoff)
            backoff = min(backoff * 2, 2.0)

    def _give_up(self, why: str) -> None:
        """Refused for good (the constructor raises it; later, :meth:`errors` says it)."""
        log.warning("the subject agent at %s refused this program: %s", self.url, why)
        with self._cond:
            self._errors.append(f"refused by the subject agent: {why}")
            self._cond.notify_all()
        self._connected.set()

    def _on_message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        with self._cond:
            if kind == "feedback":
                fv = FeedbackValue(msg["run"], int(msg["index"]), msg.get("value"), bool(msg.get("late")),
                                   time.monotonic())
                key = (fv.run, fv.index)
                if key not in self._values:
                    self._order.append(key)
                    if len(self._order) > self._keep:
                        self._values.pop(self._order.popleft(), None)
                self._values[key] = fv
                self._latest = fv
            elif kind == "hello":
                self.name = msg.get("consumer")
            elif kind == "error":
                self._errors.append(str(msg.get("message")))
            else:
                if kind == "run_start":
                    self.run = {k: v for k, v in msg.items() if k != "type"}
                elif kind == "run_stop":
                    self.run = None
                self._messages.append(msg)
            self._cond.notify_all()
