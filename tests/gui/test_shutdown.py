"""Shutting the console down under qasync is quiet: the subject link is used outside a running loop in
qasync's last event pass (the loop has stopped, Qt still delivers events), and that must neither raise
nor log "no running event loop"."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from rtcontrol.subject.embedded import local_subject_agent
from rtcontrol.subject.link import SubjectClient

pytestmark = [pytest.mark.gui, pytest.mark.timeout(60)]


def test_the_subject_link_outside_the_running_loop_is_quiet(qloop: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    agent = local_subject_agent()
    info = qloop.run(agent.__aenter__())
    client = SubjectClient(info.url, token=info.token, expected_fingerprint=info.fingerprint)
    qloop.run(client.connect())
    qloop.run(client.start_run({"run": "r1", "tr": 0.5}))
    assert client.connected
    # the loop is not running now, as in qasync's final pass: a late value and a message arrive
    client.send_feedback("r1", 3, 0.25, {"file_seen": 1.0})
    client.send_message("run over", kind="run_over", run="r1")
    assert ("r1", 3) in client.unacked  # kept: resent if the link is used again
    qloop.run(client.close())
    qloop.run(agent.__aexit__(None, None, None))
    noisy = [r for r in caplog.records if "no running event loop" in r.getMessage()
             or (r.exc_info and "no running event loop" in str(r.exc_info[1]))]
    assert not noisy
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
