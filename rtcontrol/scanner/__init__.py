"""Scanner ingest: files on disk to :class:`~rtcontrol.scanner.volume.Volume` objects (Qt-free)."""

from rtcontrol.scanner.volume import HEADER_ALLOWLIST, STAGES, Timeline, Volume

__all__ = ["HEADER_ALLOWLIST", "STAGES", "Timeline", "Volume"]
