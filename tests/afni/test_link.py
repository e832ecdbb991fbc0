"""AfniLink as the console's AFNI sink: settings from [afni], states to the controller, run end -> AFNI saves."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from rtcontrol.afni.link import AfniLink, AfniLinkSettings
from rtcontrol.afni.source import load_nifti
from rtcontrol.console import events as ev
from rtcontrol.console.controller import ConsoleController
from rtcontrol.console.links import attach_to_console
from rtcontrol.console.settings import default_settings
from tests.support.plug_realtime import FakeAfni, free_port
from tests.support.wait import wait_until


async def test_console_controller_feeds_afni_through_the_link(rtfeedme_dir: Path) -> None:
    volumes = load_nifti(rtfeedme_dir / "tiny_s16.nii")
    with FakeAfni() as afni:
        settings = default_settings().with_values(
            "afni", enabled=True, host="127.0.0.1", control_port=afni.control_port, data_port=free_port()
        )
        controller = ConsoleController(settings)
        seen: list = []
        controller.events.subscribe(seen.append)
        link = attach_to_console(controller)
        assert controller.afni is link and attach_to_console(controller) is link
        assert await wait_until(lambda: link.enabled, 5)
        for v in volumes:
            await controller.afni.send_volume(v)  # what the console's pump does
        assert await wait_until(lambda: link.status.volumes_sent == 5, 10)
        controller.events.publish(ev.RunEnded("tiny_s16", "done", 5, 0))  # the console run ends
        assert await wait_until(lambda: bool(afni.sessions) and afni.sessions[0].done, 10)  # AFNI saves
        await link.close()
    [run] = afni.sessions[0].runs
    np.testing.assert_array_equal(run.volumes()[4], volumes[4].data)
    states = [e.state for e in seen if isinstance(e, ev.ConnectionChanged) and e.name == "afni"]
    assert "connected" in states


async def test_link_off_drops_nothing_on_the_caller_and_bad_settings_fail_clearly(rtfeedme_dir: Path) -> None:
    volume = load_nifti(rtfeedme_dir / "tiny_s16.nii")[0]
    link = AfniLink(AfniLinkSettings(host=" "))
    assert link.submit(volume) is False and not link.enabled  # off: nothing queued, nothing raised
    errors: list = []
    link.add_listener(errors.append)
    await link.set_enabled(True)
    assert not link.enabled and "host is empty" in link.last_error
    link.settings.host = "127.0.0.1"
    link.settings.motion, link.settings.motion_port = True, free_port()
    await link.set_enabled(True)
    assert link.enabled and link.motion.listening_on.endswith(str(link.settings.motion_port))
    await link.set_enabled(False)
    assert not link.enabled
    await asyncio.sleep(0)
