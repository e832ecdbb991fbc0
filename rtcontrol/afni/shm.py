"""AFNI's shared-memory data channel (``shm:NAME:SIZE``), SysV IPC through ctypes (Linux).

Layout and rules are IOCHAN's (``thd_iochan.c``, spec section 4): the segment, keyed by
:func:`string_to_key`, holds ``int bstart; int bend; char buf[SIZE+1]``; the creator (us,
the image source) starts with ``bstart=0, bend=SIZE``; readable bytes are
``(bend - bstart + bufsize + 1) % bufsize``; the writer copies at ``bend+1`` and advances
``bend``, the reader copies from ``bstart`` and advances it. The channel is alive while
the segment has two attachments.

No dangling segment: the writer marks the segment for removal (``IPC_RMID``) as soon as
AFNI has attached, so the kernel frees it when the last process detaches, however we die;
before that moment a small reaper process (started with the segment) removes it if we die
(SIGKILL included); ``close()`` removes it on a normal exit, and a stale unattached segment
left under our key by an older crash is removed when we create ours.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys
import time

from rtcontrol.errors import RtcontrolError

IPC_CREAT = 0o1000
IPC_EXCL = 0o2000
IPC_RMID = 0
IPC_STAT = 2
_SHMID_DS_SIZE = 112  # struct shmid_ds on Linux x86_64/aarch64 (generic layout)
_OFF_SEGSZ, _OFF_CPID, _OFF_NATTCH = 48, 80, 88
_HDR = 8  # int bstart; int bend


class ShmError(RtcontrolError, OSError):
    """A shared-memory operation failed; the message says which and why."""


def _libc() -> ctypes.CDLL:
    if not sys.platform.startswith("linux"):
        raise ShmError("AFNI's shm: data channel is supported on Linux only; use tcp")
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
    libc.shmget.restype = ctypes.c_int
    libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    libc.shmat.restype = ctypes.c_void_p
    libc.shmdt.argtypes = [ctypes.c_void_p]
    libc.shmdt.restype = ctypes.c_int
    libc.shmctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    libc.shmctl.restype = ctypes.c_int
    return libc


_LIBC: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = _libc()
    return _LIBC


def _error(what: str) -> ShmError:
    err = ctypes.get_errno()
    return ShmError(err, f"{what}: {os.strerror(err)}")


def string_to_key(name: str, port_offset: int = 0) -> int:
    """IOCHAN's key for a segment name: 666 (+ AFNI's port offset) plus shifted bytes."""
    total = 666 + int(port_offset)
    for i, ch in enumerate(name.encode("ascii")):
        signed = ch - 256 if ch > 127 else ch  # C char is signed on x86
        total += signed << ((i % 3) * 8)
        total = (total + 2**31) % 2**32 - 2**31  # C int arithmetic
    if total < 0:
        total = -total
    elif total == 0:
        total = 314159265
    return total


def segment_id(key: int) -> int | None:
    """The id of the segment with this key, or None if there is none."""
    shmid = libc().shmget(key, 0, 0)
    return None if shmid < 0 else shmid


def stat(shmid: int) -> dict[str, int] | None:
    """``segsz``, ``cpid`` and ``nattch`` of a segment, None if it is gone."""
    buf = ctypes.create_string_buffer(_SHMID_DS_SIZE)
    if libc().shmctl(shmid, IPC_STAT, buf) < 0:
        return None
    raw = buf.raw
    return {
        "segsz": int.from_bytes(raw[_OFF_SEGSZ : _OFF_SEGSZ + 8], sys.byteorder),
        "cpid": int.from_bytes(raw[_OFF_CPID : _OFF_CPID + 4], sys.byteorder, signed=True),
        "nattch": int.from_bytes(raw[_OFF_NATTCH : _OFF_NATTCH + 8], sys.byteorder),
    }


def remove(shmid: int) -> bool:
    """Mark a segment for removal (freed at the last detach). False if it was already gone."""
    return libc().shmctl(shmid, IPC_RMID, None) == 0


# The reaper waits for EOF on its stdin (our end of the pipe closes when we exit or are
# killed), then removes the segment if it still carries our key (AFNI never attached).
_REAPER = r"""
import ctypes, sys
shmid, key = int(sys.argv[1]), int(sys.argv[2])
try:
    sys.stdin.buffer.read()
except BaseException:
    pass
libc = ctypes.CDLL(None, use_errno=True)
libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
libc.shmctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
if libc.shmget(key, 0, 0) == shmid:
    libc.shmctl(shmid, 0, None)
"""


def _start_reaper(shmid: int, key: int) -> subprocess.Popen | None:
    if getattr(sys, "frozen", False):  # a PyInstaller bundle cannot run ``-c``; stale cleanup covers it
        return None
    try:
        return subprocess.Popen(
            [sys.executable, "-S", "-c", _REAPER, str(shmid), str(key)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,  # a Ctrl-C to our process group must not kill it first
        )
    except OSError:
        return None


class _Segment:
    """An attached segment: the two ring indices and the buffer."""

    def __init__(self, shmid: int, bufsize: int) -> None:
        self.shmid = shmid
        addr = libc().shmat(shmid, None, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise _error(f"shmat(id={shmid})")
        self.addr: int | None = addr
        self.bufsize = bufsize
        self._idx = (ctypes.c_int * 2).from_address(addr)
        self._buf = (ctypes.c_char * bufsize).from_address(addr + _HDR)

    @property
    def bstart(self) -> int:
        return self._idx[0]

    @property
    def bend(self) -> int:
        return self._idx[1]

    def readable(self) -> int:
        return (self._idx[1] - self._idx[0] + self.bufsize + 1) % self.bufsize

    def nattach(self) -> int:
        info = stat(self.shmid)
        return -1 if info is None else info["nattch"]

    def alive(self) -> bool:
        return self.nattach() >= 2

    def detach(self) -> None:
        if self.addr is not None:
            libc().shmdt(self.addr)
            self.addr = None


class ShmWriter(_Segment):
    """The creator/writer end, as IOCHAN's ``iochan_init(spec, "create")``."""

    def __init__(self, name: str, size: int, port_offset: int = 0, reaper: bool = True) -> None:
        if size <= 0:
            raise ShmError(f"shm size must be > 0, got {size}")
        self.name = name
        self.key = string_to_key(name, port_offset)
        self._clear_stale()
        bufsize = size + 1
        shmid = libc().shmget(self.key, bufsize + _HDR, 0o777 | IPC_CREAT | IPC_EXCL)
        if shmid < 0:
            raise _error(f"cannot create shm segment {name!r} (key {self.key})")
        self._reaper = _start_reaper(shmid, self.key) if reaper else None
        self.removed = False
        try:
            super().__init__(shmid, bufsize)
        except BaseException:
            remove(shmid)
            raise
        self._idx[0] = 0
        self._idx[1] = bufsize - 1

    def _clear_stale(self) -> None:
        old = segment_id(self.key)
        if old is None:
            return
        info = stat(old)
        if info is not None and info["nattch"] > 0:
            raise ShmError(f"shm segment {self.name!r} (key {self.key}) is in use by another program")
        remove(old)  # left by a crash before AFNI attached: nobody uses it

    def writable(self) -> int:
        return self.bufsize - 1 - self.readable()

    def send(self, data: bytes, offset: int = 0) -> int:
        """Copy as much of ``data[offset:]`` as fits into the ring now (never waits); returns bytes written."""
        n = min(self.writable(), len(data) - offset)
        if n <= 0:
            return 0
        size = self.bufsize
        ebot = self._idx[1] + 1
        if ebot >= size:
            ebot = 0
        etop = ebot + n - 1
        base = self.addr + _HDR  # type: ignore[operator]
        start = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value  # no copy of ``data``
        if start is None:  # NULL: ctypes gives no address for it
            raise ValueError("no buffer to copy from")
        src = start + offset
        if etop < size:
            ctypes.memmove(base + ebot, src, n)
            self._idx[1] = etop
        else:
            first = size - ebot
            ctypes.memmove(base + ebot, src, first)
            ctypes.memmove(base, src + first, n - first)
            self._idx[1] = n - first - 1
        return n

    def mark_removed(self) -> None:
        """IPC_RMID now (once AFNI is attached): the kernel frees it when both have detached."""
        if not self.removed:
            remove(self.shmid)
            self.removed = True
        self._stop_reaper()

    def _stop_reaper(self) -> None:
        if self._reaper is not None:
            try:
                self._reaper.stdin.close()  # type: ignore[union-attr]
                self._reaper.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                self._reaper.kill()
            self._reaper = None

    def close(self) -> None:
        """Detach and remove (as ``iochan_close``); safe to call twice."""
        self.detach()
        if not self.removed:
            remove(self.shmid)
            self.removed = True
        self._stop_reaper()

    def __del__(self) -> None:  # last resort; close() is the normal path
        try:
            self.close()
        except Exception:
            pass


class ShmReader(_Segment):
    """The acceptor/reader end, as AFNI's ``iochan_init(spec, "accept")`` (tests, tools)."""

    def __init__(self, name: str, port_offset: int = 0, wait: float = 0.0) -> None:
        key = string_to_key(name, port_offset)
        deadline = time.monotonic() + wait
        while True:
            shmid = segment_id(key)
            if shmid is not None or time.monotonic() >= deadline:
                break
            time.sleep(0.002)
        if shmid is None:
            raise ShmError(f"no shm segment {name!r} (key {key})")
        info = stat(shmid)
        if info is None:
            raise _error(f"shm segment {name!r} vanished")
        super().__init__(shmid, info["segsz"] - _HDR)

    def recv(self, limit: int) -> bytes:
        """Up to ``limit`` readable bytes (maybe none), advancing ``bstart``."""
        n = min(self.readable(), limit)
        if n <= 0:
            return b""
        size, start = self.bufsize, self._idx[0]
        base = self.addr + _HDR  # type: ignore[operator]
        if start + n <= size:
            out = ctypes.string_at(base + start, n)
            self._idx[0] = (start + n) % size
        else:
            first = size - start
            out = ctypes.string_at(base + start, first) + ctypes.string_at(base, n - first)
            self._idx[0] = n - first
        return out

    def close(self) -> None:
        """Detach and remove, as AFNI's ``iochan_close`` does."""
        shmid = self.shmid
        self.detach()
        remove(shmid)
