"""Fixtures for subject-agent tests: a real agent on 127.0.0.1 with TLS (helpers in tests/support/subject.py)."""

from __future__ import annotations

import pytest

from rtcontrol.subject.embedded import local_subject_agent
from rtcontrol.subject.link import SubjectClient
from tests.support.subject import Recorder


@pytest.fixture(autouse=True)
def rtcontrol_home(tmp_path, monkeypatch):
    """Each test's own rtcontrol home: the agent's consumer secret is made there, and stimulus programs
    (in this process or started by the test) read it from there."""
    home = tmp_path / "rtcontrol-home"
    monkeypatch.setenv("RTCONTROL_HOME", str(home))
    return home


@pytest.fixture
async def agent_info():
    async with local_subject_agent() as info:
        yield info


@pytest.fixture
async def client(agent_info):
    rec = Recorder()
    c = SubjectClient(agent_info.url, token=agent_info.token, expected_fingerprint=agent_info.fingerprint,
                      **rec.kw())
    c.recorder = rec  # type: ignore[attr-defined]
    await c.connect(timeout=10)
    yield c
    await c.close()


