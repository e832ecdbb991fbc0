"""The worker keeps freed memory: big buffers freed and allocated again do not page-fault."""

from __future__ import annotations

import resource
import sys

import numpy as np
import pytest

from rtcontrol.worker.malloc import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux only")
def test_reused_volume_buffers_do_not_fault_after_keep_freed_memory() -> None:
    if not keep_freed_memory():
        pytest.skip("not glibc (mallopt ignored)")
    frame = np.ones(1_300_000, dtype=np.uint8).tobytes()

    def churn() -> None:  # what the worker does per volume: fresh copies of a 1.3 MB frame, then freed
        a = bytearray(frame)
        b = bytes(a)
        c = bytes(b[::-1])
        del a, b, c

    churn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        churn()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 50 * 10, f"{faults} page faults for 50 reused volumes (about 46000 without the setting)"
