"""One folder's file events straight from Linux inotify, in one thread.

watchdog delivers the same events through three threads and a 1 ms burst-coalescing window (about 1.4 ms
from a file's close to its handler on this project's 2-core machine, and Python work on every event while
the previous file is being parsed); this thread reads the inotify descriptor and calls back at once
(about 0.1 ms):

* ``on_complete(path, t)`` for ``IN_CLOSE_WRITE`` (written and closed) and ``IN_MOVED_TO`` (renamed in
  whole, from this folder or another): the file is complete, read it now;
* ``on_change(kind, path, t)`` with kind "created", "modified" (once per write, until the close) or
  "attrib" (touched), which the watcher notes (when a file was first seen; a finished file changed);
* ``on_lost()`` when the kernel's event queue overflowed: events were lost, look at the folder again.

Not recursive, Linux only: :meth:`FolderEvents.start` returns False elsewhere, and the watcher uses watchdog.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import select
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name


class FolderEvents:
    """Calls back from its own thread for the files of ``folder`` (not its sub-folders); see the module."""

    def __init__(self, folder: Path, on_complete: Callable[[Path, float], None],
                 on_change: Callable[[str, Path, float], object], on_lost: Callable[[], object]) -> None:
        self.folder = folder
        self.on_complete, self.on_change, self.on_lost = on_complete, on_change, on_lost
        self._fd = -1
        self._wake: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._writing: set[bytes] = set()  # names modified since their last close: "modified" said once

    def start(self) -> bool:
        """Begin watching; False (nothing started) where inotify is not available."""
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        except (OSError, AttributeError):
            return False
        if fd < 0:
            return False
        if libc.inotify_add_watch(fd, os.fsencode(self.folder), MASK) < 0:
            os.close(fd)
            return False
        self._fd, self._wake = fd, os.pipe()
        self._thread = threading.Thread(target=self._run, name="rtcontrol-inotify", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        if self._thread is None or self._wake is None:
            return
        os.write(self._wake[1], b"x")
        self._thread.join(2.0)
        for fd in (self._fd, *self._wake):
            os.close(fd)
        self._thread, self._wake, self._fd = None, None, -1

    def _run(self) -> None:
        assert self._wake is not None
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake[0], select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._wake[0] in ready:
                return
            try:
                buf = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                log.error("cannot read file events of %s (%s): no new files will be seen", self.folder, exc)
                return
            try:
                self._dispatch(buf, time.monotonic())
            except Exception:  # the consumer's bug must not stop the events
                log.exception("handling file events of %s", self.folder)

    def _dispatch(self, buf: bytes, t: float) -> None:
        at = 0
        while at + _HEADER.size <= len(buf):
            _wd, mask, _cookie, n = _HEADER.unpack_from(buf, at)
            name = buf[at + _HEADER.size : at + _HEADER.size + n].split(b"\0", 1)[0]
            at += _HEADER.size + n
            if mask & IN_Q_OVERFLOW:
                log.warning("file events of %s were lost (inotify queue overflow): looking at the folder again",
                            self.folder)
                self._writing.clear()
                self.on_lost()
                continue
            if not name or mask & IN_ISDIR:
                continue
            path = self.folder / os.fsdecode(name)
            if mask & (IN_CLOSE_WRITE | IN_MOVED_TO):
                self._writing.discard(name)
                self.on_complete(path, t)
            elif mask & IN_CREATE:
                self.on_change("created", path, t)
            elif mask & IN_MODIFY:
                if name not in self._writing:
                    self._writing.add(name)
                    self.on_change("modified", path, t)
            elif mask & IN_ATTRIB:
                self.on_change("attrib", path, t)
