"""Scanner panel: the watch folder, what was seen in it, whether the scanner keeps pace, and the head's
framewise displacement (FD) against its threshold."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from PySide6 import QtWidgets

from rtcontrol.console import events as ev
from rtcontrol.console.model import RunModel
from rtcontrol.gui.panel import ElidedLabel, Panel, caption, set_role


def fd_numbers(fd: np.ndarray, threshold: float) -> tuple[float | None, float | None, int]:
    """(latest FD, largest FD, volumes over ``threshold``) in mm; volumes without an FD are skipped."""
    finite = fd[np.isfinite(fd)]
    if not finite.size:
        return None, None, 0
    return float(finite[-1]), float(finite.max()), int(np.count_nonzero(finite > threshold))


class ScannerPanel(Panel):
    title = "Scanner"
    icon_name = "scanner"

    def __init__(self, model: RunModel | None = None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model  # FD comes from the project's "fd" metric in the run's model
        self.fd_threshold = 0.5
        self.tr_seconds = 2.0  # not "tr": that would hide QObject.tr
        self.expected = 0
        self.status: ev.ScannerStatus | None = None
        self.status_time = 0.0
        self.scanner_late = 0
        self.analysis_late = 0
        self.last_warning = ""
        self.ended: ev.RunEnded | None = None  # after a run: no "scanner late", no ticking "since last volume"

        self.folder = ElidedLabel("—")  # one line: a wrapped path was cut in a short panel
        self.format = QtWidgets.QLabel("—")
        self.series = QtWidgets.QLabel("—")
        self.files = QtWidgets.QLabel("0")
        self.volumes = QtWidgets.QLabel("0")
        self.volumes.setObjectName("big")
        self.since = QtWidgets.QLabel("—")
        self.since.setObjectName("big")
        self.since.setWordWrap(True)  # "waiting for the first volume" must not widen the column for good
        self.fd = QtWidgets.QLabel("—")
        self.fd.setObjectName("big")
        self.fd.setToolTip("Framewise displacement of the newest volume (from the project's fd metric)")
        self.fd_detail = QtWidgets.QLabel(f"threshold {self.fd_threshold:g} mm")
        self.fd_detail.setObjectName("caption")
        self.fd_detail.setWordWrap(True)
        self.late = QtWidgets.QLabel("scanner late 0 · analysis late 0")
        self.warning = QtWidgets.QLabel("")
        self.warning.setWordWrap(True)

        form = QtWidgets.QFormLayout()
        form.addRow(caption("watch folder"), self.folder)
        form.addRow(caption("format"), self.format)
        form.addRow(caption("series"), self.series)
        form.addRow(caption("files seen"), self.files)
        form.addRow(caption("volumes"), self.volumes)
        self.tr_note = caption("")  # beside the big number, not in it: the column stays narrow
        since_row = QtWidgets.QHBoxLayout()
        since_row.addWidget(self.since)
        since_row.addWidget(self.tr_note)
        since_row.addStretch(1)
        form.addRow(caption("since last volume"), since_row)
        form.addRow(caption("FD"), self.fd)
        form.addRow(self.fd_detail)  # the whole width: it may be bold and long
        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.late)
        layout.addWidget(self.warning)
        layout.addStretch(1)

    def set_run(self, tr: float, expected: int, folder: str = "") -> None:
        self.tr_seconds, self.expected = tr, expected
        if folder:
            self.folder.setText(folder)
        self.dirty = True

    def set_fd_threshold(self, mm: float) -> None:
        """What counts as a volume over the threshold (``[display] fd_threshold``), at once."""
        self.fd_threshold = float(mm)
        self.dirty = True

    def on_event(self, event: Any) -> None:
        if isinstance(event, ev.FeedbackArrived):
            self.dirty = True  # a new FD
        elif isinstance(event, ev.RunEnded):
            self.ended = event
            self.last_warning = ""  # a warning about the run that ended no longer applies
            self.dirty = True
        elif self.ended is not None and isinstance(event, (ev.ScannerStatus, ev.Lateness)):
            return  # the watcher's last ticks after the end: the run is over, the panel says so
        elif isinstance(event, ev.ScannerStatus):
            self.status, self.status_time = event, time.monotonic()
            self.dirty = True
        elif isinstance(event, ev.Lateness):
            if event.kind == "scanner":
                self.scanner_late += 1
            else:
                self.analysis_late += 1
            self.last_warning = event.message
            self.dirty = True
        elif isinstance(event, ev.StateChanged) and event.state == ev.RUNNING:
            self.scanner_late = self.analysis_late = 0
            self.last_warning = ""
            self.ended = None
            self.status = None
            self.since.setText("waiting for the first volume")
            set_role(self.since, "caption")
            self.dirty = True

    def repaint_now(self) -> None:
        s = self.status
        if s is not None:
            self.folder.setText(s.folder or "—")
            self.format.setText(s.source_format or "—")
            self.series.setText(s.series or "—")
            self.files.setText(str(s.files_seen))
            self.volumes.setText(f"{s.volumes_seen} / {self.expected}" if self.expected else str(s.volumes_seen))
            if self.ended is not None:
                self.since.setText(f"run ended ({self.ended.reason})")
                set_role(self.since, "caption")
            elif s.since_last is None:
                self.since.setText("waiting for the first volume")
                set_role(self.since, "caption")
            else:
                self.since.setText(f"{s.since_last:.1f} s")
                set_role(self.since, "warn" if s.since_last > 1.5 * self.tr_seconds else "big")
        self.tr_note.setText(f"TR {self.tr_seconds:g} s")
        self._repaint_fd()
        self.late.setText(f"scanner late {self.scanner_late} · analysis late {self.analysis_late}")
        self.warning.setText(self.last_warning)
        set_role(self.warning, "warn" if self.last_warning else "caption")

    def _repaint_fd(self) -> None:
        fd = self.model.metric("fd") if self.model is not None else np.empty(0)
        latest, largest, over = fd_numbers(fd, self.fd_threshold)
        if latest is None or largest is None:
            self.fd.setText("—")
            set_role(self.fd, "caption")
            self.fd_detail.setText(f"threshold {self.fd_threshold:g} mm")
            return
        self.fd.setText(f"{latest:.2f} mm")
        set_role(self.fd, "warn" if latest > self.fd_threshold else "big")
        self.fd_detail.setText(f"max {largest:.2f} mm · {over} over {self.fd_threshold:g} mm")
        set_role(self.fd_detail, "warn" if over else "caption")
