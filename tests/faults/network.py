"""Network faults between the console and a server: the worker tests' cuttable proxy, plus stalls.

A stall holds every byte in both directions without dropping the connection (a congested or frozen link);
when it lifts, the bytes go on in order.
"""

from __future__ import annotations

import asyncio

from tests.support.proxy import CuttableProxy


class _GatedReader:
    """A stream reader whose data waits at the gate while the link is stalled."""

    def __init__(self, reader: asyncio.StreamReader, gate: asyncio.Event) -> None:
        self.reader, self.gate = reader, gate

    async def read(self, n: int) -> bytes:
        data = await self.reader.read(n)
        await self.gate.wait()
        return data


class FaultyProxy(CuttableProxy):
    """:class:`CuttableProxy` (``cut``/``restore``) that can also ``stall``."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.stalls = 0
        self.port = 0

    async def start(self) -> int:
        self.port = await super().start()
        return self.port

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, down: bool) -> None:
        await super()._pump(_GatedReader(src, self.flowing), dst, down)  # type: ignore[arg-type]

    async def stall(self, seconds: float) -> None:
        """Forward nothing for ``seconds``, then let everything held go on."""
        self.stalls += 1
        self.flowing.clear()
        try:
            await asyncio.sleep(seconds)
        finally:
            self.flowing.set()
