"""The AFNI panel over a real AfniLink: switch on, volumes reach the plug_realtime stand-in, the panel
shows state, counts, the metadata block, errors, and AFNI's motion sent over a real socket."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from rtcontrol.afni.link import AfniLink, AfniLinkSettings
from rtcontrol.afni.source import load_nifti
from rtcontrol.gui.afni_panel import AfniPanel
from tests.support.plug_realtime import FakeAfni, free_port
from tests.support.wait import wait_until

pytestmark = [pytest.mark.gui, pytest.mark.timeout(60)]


@pytest.fixture
def afni_dir(fixtures_root: Path) -> Path:
    return fixtures_root / "afni"


def test_panel_sends_and_shows_everything(qtbot: Any, qloop: Any, afni_dir: Path) -> None:
    volumes = load_nifti(afni_dir / "rtfeedme" / "tiny_s16.nii")
    motion_bytes = (afni_dir / "motion_channel" / "motion_only_v1.bin").read_bytes()
    link = AfniLink()
    panel = AfniPanel(link)
    qtbot.addWidget(panel)
    assert panel.state_label.text() == "off" and not panel.enable_box.isChecked()

    with FakeAfni() as afni:
        motion_port = free_port()
        panel.host_edit.setText("127.0.0.1")
        panel.control_spin.setValue(afni.control_port)
        panel.data_spin.setValue(free_port())
        panel.motion_box.setChecked(True)
        panel.motion_spin.setValue(motion_port)
        panel.note_edit.setText("neurofeedback run")

        async def scenario() -> None:
            panel.enable_box.setChecked(True)  # the operator switches AFNI on
            await wait_until(lambda: link.enabled, 5, "link on")
            assert not panel.settings_box.isEnabled()
            for v in volumes:
                link.submit(v)
            await wait_until(lambda: link.status.volumes_sent == 5, 10, "5 volumes sent")
            # AFNI connects back with its motion estimates
            _, writer = await asyncio.open_connection("127.0.0.1", motion_port)
            writer.write(motion_bytes)
            await writer.drain()
            await wait_until(lambda: len(link.motion.records) == 10, 5, "10 motion records")
            writer.close()
            await wait_until(lambda: "10 TRs" in panel.motion_label.text(), 5, "motion shown")
            panel.enable_box.setChecked(False)  # off: AFNI run ends, dataset saved
            await wait_until(lambda: not link.enabled and panel.state_label.text() == "off", 5, "off")

        qloop.run(scenario())
        assert afni.wait_sessions_done(1)

    panel.refresh()
    assert panel.sent_label.text() == "5" and panel.not_sent_label.text() == "0"
    assert panel.runs_label.text() == "1"
    assert "XYZAXES L-R P-A I-S" in panel.header_view.toPlainText()
    assert "PREFIX tiny_s16" in panel.header_view.toPlainText()
    xs, ys = panel.curves[1].getData()
    assert len(xs) == 10 and ys[5] == pytest.approx(2.0977, abs=1e-3)  # AFNI's dL after the phantom shift
    assert len(afni.sessions[0].runs[0].images) == 5
    assert afni.sessions[0].runs[0].info["notes"] == ["neurofeedback run"]
    assert panel.settings_box.isEnabled()


def test_panel_reports_unreachable_afni_and_bad_settings(qtbot: Any, qloop: Any, afni_dir: Path) -> None:
    volumes = load_nifti(afni_dir / "rtfeedme" / "tiny_s16.nii")
    link = AfniLink(AfniLinkSettings(control_port=free_port()))
    panel = AfniPanel(link)
    qtbot.addWidget(panel)

    panel.host_edit.setText("")
    panel.enable_box.setChecked(True)
    panel.refresh()
    assert not panel.enable_box.isChecked() and "host is empty" in panel.error_label.text()

    panel.host_edit.setText("127.0.0.1")

    async def scenario() -> None:
        panel.enable_box.setChecked(True)
        await wait_until(lambda: link.enabled, 5, "link on")
        link.submit(volumes[0])
        await wait_until(lambda: link.status.volumes_not_sent == 1, 5, "not sent reported")
        await wait_until(lambda: "not listening" in panel.error_label.text(), 5, "error shown")
        await link.stop()

    qloop.run(scenario())
    panel.refresh()
    assert panel.not_sent_label.text() == "1"


def test_panel_takes_the_console_controller(qtbot: Any) -> None:
    from rtcontrol.console.controller import ConsoleController
    from rtcontrol.console.settings import default_settings

    controller = ConsoleController(default_settings())
    panel = AfniPanel(controller)
    qtbot.addWidget(panel)
    assert controller.afni is panel.link  # the console sends every volume through the panel's link
    assert panel.control_spin.value() == controller.settings.afni.control_port
    assert AfniPanel(controller).link is panel.link  # one link per console


def test_a_repeated_problem_is_said_once_without_a_doubled_prefix(qtbot: Any, qloop: Any) -> None:
    from rtcontrol.afni.sender import SenderEvent

    link = AfniLink(AfniLinkSettings(control_port=free_port()))
    panel = AfniPanel(link)
    qtbot.addWidget(panel)
    for _ in range(3):  # the link retries every few seconds with the same error
        panel._on_link_event(SenderEvent("error", "AFNI: cannot connect to 127.0.0.1:7961 (refused)"))
    panel.refresh()
    assert panel.error_label.text() == "error: cannot connect to 127.0.0.1:7961 (refused)"
    panel._on_link_event(SenderEvent("error", "AFNI: AFNI closed the connection"))
    panel.refresh()
    assert panel.error_label.text().splitlines() == [
        "error: cannot connect to 127.0.0.1:7961 (refused)", "error: AFNI closed the connection"]
    panel.close()  # its timer stops and it unsubscribes before the link and the loop go
    qloop.run(link.stop())
