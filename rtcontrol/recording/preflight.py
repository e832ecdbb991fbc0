"""Before a run starts: can its recording be written? Say so now, not at volume 300."""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from rtcontrol.recording.runinfo import RecordingError, describe_os_error

#: Room kept free beyond the run's estimate (the system and other programs need the disk too).
MARGIN_BYTES = 200 * 1024**2
#: Bytes on disk per volume byte: the raw journal copy plus the gzipped BIDS NIfTI (at most about
#: as large as the raw data for noisy EPI) plus derivatives.
DISK_FACTOR = 2.2
#: Volumes assumed when the run's length is not known in advance.
UNKNOWN_VOLUMES = 1000
#: One volume's size when not known before the first arrives: a 2 mm multiband EPI (104x104x72 int16) is 1.5 MB.
DEFAULT_VOLUME_BYTES = 2 * 1024**2


@dataclass(frozen=True)
class Preflight:
    """What the check found: the room needed and the room there is, in bytes."""

    folder: Path
    needed: int
    free: int

    def summary(self) -> str:
        return f"{self.folder}: {self.free / 1024**3:.1f} GB free, the run needs about {self.needed / 1024**3:.2f} GB"


def estimate_bytes(expected_volumes: int, volume_bytes: int) -> int:
    """Disk room a run needs, margin included."""
    volumes = expected_volumes if expected_volumes > 0 else UNKNOWN_VOLUMES
    return int(volumes * volume_bytes * DISK_FACTOR) + MARGIN_BYTES


def preflight(run_dir: Path | str, expected_volumes: int, volume_bytes: int = DEFAULT_VOLUME_BYTES, *,
              bids_root: Path | str | None = None) -> Preflight:
    """Check that ``run_dir`` (and ``bids_root``) can be written and hold the run; raise :class:`RecordingError` if not.

    ``volume_bytes`` is one volume's stored size (e.g. 64*64*36*2; by default a generous 2 MB, since the
    console calls this before the first volume); ``expected_volumes`` 0 means unknown.
    """
    run_dir = Path(run_dir)
    needed = estimate_bytes(expected_volumes, volume_bytes)
    free = None
    for folder in [run_dir] + ([Path(bids_root)] if bids_root else []):
        _check_writable(folder)
        room = shutil.disk_usage(folder).free
        free = room if free is None else min(free, room)
    assert free is not None
    if free < needed:
        raise RecordingError(
            f"{run_dir}: only {free / 1024**2:.0f} MB free, and this run needs about {needed / 1024**2:.0f} MB "
            f"({expected_volumes or UNKNOWN_VOLUMES} volumes of {volume_bytes / 1024:.0f} kB plus a margin): "
            "free space or record to another disk before starting"
        )
    return Preflight(run_dir, needed, free)


def _check_writable(folder: Path) -> None:
    """Create the folder if needed and write, sync and remove a probe file in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RecordingError(describe_os_error(exc, folder)) from exc
    if not folder.is_dir():
        raise RecordingError(f"{folder} is not a folder: choose a folder to record into")
    probe = folder / f".rtcontrol-probe-{uuid.uuid4().hex}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, b"rtcontrol write test\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise RecordingError(describe_os_error(exc, folder)) from exc
    finally:
        try:
            probe.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise RecordingError(describe_os_error(exc, folder)) from exc
