"""One exception base: every error rtcontrol defines derives from RtcontrolError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import rtcontrol
from rtcontrol.errors import RtcontrolError
from rtcontrol.link.codec import FrameError
from rtcontrol.subject.protocol import ProtocolError


def test_every_rtcontrol_exception_derives_from_the_one_base() -> None:
    found = []
    for info in pkgutil.walk_packages(rtcontrol.__path__, "rtcontrol."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == info.name and issubclass(cls, BaseException):
                found.append(cls)
    assert len(found) > 20
    assert [c.__qualname__ for c in found if not issubclass(c, RtcontrolError)] == []


def test_the_subject_protocol_error_is_the_link_frame_error() -> None:
    assert issubclass(ProtocolError, FrameError)
    assert issubclass(ProtocolError, ValueError)  # callers that caught ValueError still do
