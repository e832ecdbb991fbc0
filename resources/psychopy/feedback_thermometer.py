"""A PsychoPy neurofeedback thermometer driven by the rtcontrol subject agent.

Run the agent on this PC (``python main.py --subject``), then::

    python resources/psychopy/feedback_thermometer.py            # full-screen PsychoPy window
    python resources/psychopy/feedback_thermometer.py --text     # no PsychoPy: print values (a quick check)

The agent lets it in with the consumer secret it keeps in ``consumer.secret`` in its home folder
(``~/.rtcontrol`` or ``$RTCONTROL_HOME``; ``--secret-file`` for another place). Keys 1-4 are sent back as responses (they reach the experiment's project on the worker); Escape quits.
The feedback value is a number (or an object with a numeric ``value``) mapped from the run's display
scale (``low``..``high``, set on the console) to an empty..full thermometer.

Only ``FeedbackClient`` comes from rtcontrol; it needs no PsychoPy and no asyncio: ``latest()`` never
blocks, so it is safe to call once per frame.
"""

from __future__ import annotations

import argparse
import sys

from rtcontrol.subject import FeedbackClient


def level(fb: FeedbackClient, value: object) -> float:
    """A feedback value as 0..1 on the run's display scale."""
    if isinstance(value, dict):
        value = value.get("value")
    if not isinstance(value, (int, float)):
        return 0.0
    display = (fb.run or {}).get("display", {})
    low, high = display.get("low", 0.0), display.get("high", 1.0)
    return min(1.0, max(0.0, (value - low) / (high - low)))


def run_text(fb: FeedbackClient, volumes: int, timeout: float) -> int:
    """Print each volume's feedback as it arrives (what the window would show)."""
    for volume in range(volumes):
        got = fb.wait_for(volume, timeout=timeout)
        frac = level(fb, got.value)
        print(f"volume {got.index}: value {got.value!r} -> {frac:.0%}{' (late)' if got.late else ''}", flush=True)
        fb.displayed(got.index, got.run)
    fb.send_response(done=True, volumes=volumes)
    return 0


def run_psychopy(fb: FeedbackClient) -> int:
    from psychopy import core, event, visual  # only this mode needs PsychoPy

    win = visual.Window(fullscr=True, color="black", units="height")
    frame = visual.Rect(win, width=0.08, height=0.6, pos=(0.3, 0), lineColor="white", fillColor=None, lineWidth=3)
    fill = visual.Rect(win, width=0.07, height=0.0, pos=(0.3, -0.3), fillColor="#2ecc71", lineColor=None)
    fixation = visual.TextStim(win, text="+", height=0.08, color="white")
    message = visual.TextStim(win, text="", pos=(0, 0.38), height=0.05, color="white")
    clock = core.Clock()
    shown = None
    while True:
        for m in fb.messages():  # "rest", instructions, "run over", run start/stop
            if m.get("type") == "message":
                message.text = m.get("text", "")
        latest = fb.latest()  # never blocks: fine once per frame
        index = latest.index if latest else None
        frac = level(fb, latest.value) if latest else 0.0
        fill.height = 0.6 * frac
        fill.pos = (0.3, -0.3 + fill.height / 2)
        for stim in (frame, fill, fixation, message):
            stim.draw()
        win.flip()
        if index is not None and index != shown:
            fb.displayed(index)  # stamps "displayed" on the console's timeline
            shown = index
        for key in event.getKeys(keyList=["1", "2", "3", "4", "escape"], timeStamped=clock):
            if key[0] == "escape":
                win.close()
                return 0
            fb.send_response(key=key[0], t=key[1], volume=index)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8741, help="the agent's --local-port (default 8741)")
    parser.add_argument("--text", action="store_true", help="print values instead of opening a PsychoPy window")
    parser.add_argument("--volumes", type=int, default=10, help="--text: how many volumes to wait for")
    parser.add_argument("--timeout", type=float, default=30.0, help="--text: seconds to wait for each volume")
    parser.add_argument("--secret-file", default=None,
                        help="the agent's consumer secret (default: consumer.secret in ~/.rtcontrol or $RTCONTROL_HOME, "
                             "where the agent on this PC keeps it)")
    args = parser.parse_args(argv)
    with FeedbackClient(args.port, name="psychopy", secret_file=args.secret_file) as fb:
        if args.text:
            return run_text(fb, args.volumes, args.timeout)
        return run_psychopy(fb)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ConnectionError, TimeoutError) as exc:
        print(f"feedback_thermometer: {exc}", file=sys.stderr)
        sys.exit(1)
