"""The one wait-until helper of the tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_until(predicate: Callable[[], object], timeout: float = 20.0,
                     what: str | Callable[[], str] = "condition") -> bool:
    """Wait on the running loop (so servers and the GUI keep going) until ``predicate()`` is true; after
    ``timeout`` seconds fail with an AssertionError naming ``what`` (a text, or a function giving one)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}")
        await asyncio.sleep(0.01)
    return True
