"""The one reconnect loop of the console's links: dial until connected, waiting as :class:`Redial` says.

Thin on purpose: what a failure means (fatal, busy, try later) is decided in
:mod:`rtcontrol.link.delivery`, where it is tested without sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from rtcontrol.link.delivery import Redial, Wait
from rtcontrol.link.transport import Connected


async def redial(
    dial: Callable[[], Awaitable[Connected]], policy: Redial, on_wait: Callable[[Wait], Any] | None = None,
) -> Connected:
    """``dial()`` until it connects; a fatal refusal (wrong certificate or token) is raised."""
    while True:
        try:
            link = await dial()
        except Exception as exc:
            wait = policy.failed(exc)  # raises a fatal refusal
            if on_wait is not None:
                on_wait(wait)
            await asyncio.sleep(wait.delay)
            continue
        policy.succeeded()
        return link
