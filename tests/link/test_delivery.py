"""The delivery core fed events directly: no event loop, no sockets, no TLS.

Frames are real wire frames (:mod:`rtcontrol.link.codec`), so what the core hands back is what a
client would put on the socket, byte for byte.
"""

from __future__ import annotations

import numpy as np
import pytest

from rtcontrol.link.codec import decode_message, encode_message, encode_volume
from rtcontrol.link.delivery import Kind, LinkState, Outbox, Redial
from rtcontrol.link.pinning import PinError
from rtcontrol.link.transport import AuthError, LinkError, Throttled
from rtcontrol.scanner.volume import Volume


def _volume(index: int) -> Volume:
    return Volume(index=index, data=np.full((4, 4, 2), index, dtype=np.int16), affine=np.eye(4), tr=2.0)


def _frames(run: str, n: int) -> dict[tuple[str, int], bytes]:
    return {(run, i): encode_volume(_volume(i), i, run=run) for i in range(1, n + 1)}


def test_queued_while_down_goes_out_in_order_once_connected() -> None:
    box: Outbox[tuple[str, int]] = Outbox()
    frames = _frames("r1", 3)
    assert all(box.queue(k, f) is None for k, f in frames.items())  # not connected: nothing to send
    box.connected()
    out = box.flush()
    assert [s.frame for s in out] == list(frames.values())
    assert all(s.kind is Kind.ITEM and not s.resend for s in out)
    assert box.flush() == [] and box.ready  # each frame goes out once per connection; then new ones go at once


def test_unacked_are_resent_after_reconnect_in_order_and_acked_never_again() -> None:
    box: Outbox[tuple[str, int]] = Outbox()
    box.connected()
    assert box.flush() == [] and box.ready
    frames = _frames("r1", 5)
    sent = [box.queue(k, f) for k, f in frames.items()]
    assert [s.frame for s in sent if s] == list(frames.values())  # ready: sent at once
    assert box.ack(("r1", 1)) and box.ack(("r1", 3))
    assert not box.ack(("r1", 3))  # a second ack changes nothing
    box.disconnected()
    assert box.queue(("r1", 6), b"six") is None  # down: queued
    box.connected()
    out = box.flush()
    assert [s.key for s in out] == [("r1", 2), ("r1", 4), ("r1", 5), ("r1", 6)]
    assert [s.resend for s in out] == [True, True, True, False]
    assert out[0].frame == frames[("r1", 2)]
    assert box.resent == 3
    for s in out:
        box.ack(s.key)
    box.disconnected()
    box.connected()
    assert box.flush() == []  # nothing acknowledged goes out again
    assert len(box) == 0


def test_a_duplicate_is_not_queued_twice_unless_replaced() -> None:
    box: Outbox[tuple[str, int]] = Outbox()
    box.connected()
    box.flush()
    assert box.queue(("r", 1), b"a") is not None
    assert box.queue(("r", 1), b"a") is None  # the worker's rule: the first frame stands
    again = box.queue(("r", 1), b"b", replace=True)  # the subject link's rule: the new value goes out
    assert again is not None and again.frame == b"b" and box.unacked == {("r", 1): b"b"}


def test_session_lost_names_what_was_not_acknowledged() -> None:
    box: Outbox[tuple[str, int]] = Outbox()
    box.connected()
    box.flush()
    for k, f in _frames("r1", 3).items():
        box.queue(k, f)
    box.ack(("r1", 1))
    box.disconnected()
    box.connected()
    assert box.session_lost() == [("r1", 2), ("r1", 3)]
    assert box.flush() == []  # a peer that lost the session is not sent the old run's volumes


def test_requests_are_sent_again_on_a_new_connection_until_answered() -> None:
    box: Outbox[tuple[str, int]] = Outbox()
    assert box.request(1, encode_message("request", id=1, op="status", args={})) is None  # down
    box.connected()
    out = box.flush()
    assert [(s.kind, s.key, s.resend) for s in out] == [(Kind.REQUEST, 1, False)]
    assert decode_message(out[0].frame)["op"] == "status"
    assert box.flush() == []
    sent = box.request(2, encode_message("request", id=2, op="list_projects", args={}))
    assert sent is not None and sent.key == 2
    box.disconnected()
    box.connected()
    assert [(s.key, s.resend) for s in box.flush()] == [(1, True), (2, True)]  # both unanswered: both again
    assert box.replied(1)
    box.disconnected()
    box.connected()
    assert [s.key for s in box.flush()] == [2]


def test_requests_go_before_items_and_messages_before_both() -> None:
    box: Outbox[tuple[str, int]] = Outbox(backlog=10)
    box.queue(("r", 1), b"v1")
    box.request(7, b"start")
    assert box.post(b"hello") is None
    box.connected()
    assert [s.kind for s in box.flush()] == [Kind.MESSAGE, Kind.REQUEST, Kind.ITEM]
    assert box.queue(("r", 2), b"v2") is None  # queued while the flush is being sent: not ahead of it
    assert [s.key for s in box.flush()] == [("r", 2)] and box.flush() == [] and box.ready
    assert box.post(b"now") is not None  # ready: a message goes at once and is not kept


def test_a_replay_sends_items_in_its_own_order_and_the_flush_skips_them() -> None:
    box: Outbox[tuple[str, int]] = Outbox()
    box.connected()
    box.flush()
    box.queue(("r", 3), b"v3")  # unacknowledged from before
    box.disconnected()
    box.connected()
    box.queue(("r", 1), b"v1")  # read back from the recording
    box.queue(("r", 2), b"v2")
    out = [box.send_item(("r", i)) for i in (1, 2, 3)]
    assert [s.frame for s in out if s] == [b"v1", b"v2", b"v3"] and out[2] and out[2].resend
    assert box.send_item(("r", 1)) is None and box.flush() == []


def test_the_oldest_items_go_over_the_limit_and_are_counted() -> None:
    box: Outbox[tuple[str, int]] = Outbox(limit=2)
    for i in range(1, 5):
        box.queue(("r", i), i)
    assert list(box.unacked) == [("r", 3), ("r", 4)] and box.dropped == 2


def test_a_busy_peer_is_waited_for_as_long_as_it_asks_and_said_once() -> None:
    policy = Redial("worker link", 0.05, 1.0)
    first = policy.failed(Throttled("busy", 3.0))
    second = policy.failed(Throttled("busy", 3.0))
    assert first.delay == 3.0 and first.notice and "refused for now" in first.notice
    assert second.delay == 3.0 and second.notice is None
    policy.succeeded()
    assert policy.failed(Throttled("busy", 1000)).delay == 30.0  # capped, and a new episode is said again


def test_other_failures_back_off_up_to_the_cap_and_start_over_after_a_connection() -> None:
    policy = Redial("subject link", 0.1, 0.5)
    assert [policy.failed(LinkError("down")).delay for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert policy.failed(ConnectionRefusedError()).delay == 0.5
    policy.succeeded()
    assert policy.failed(LinkError("down")).delay == 0.1


def test_a_first_connection_says_an_unreachable_peer_at_once_and_waits_for_a_busy_one_within_its_budget() -> None:
    policy = Redial("worker link", 0.05, 1.0, retry_errors=False, budget=60.0)
    with pytest.raises(LinkError, match="no worker"):
        policy.failed(LinkError("no worker at wss://127.0.0.1:1"))
    assert [policy.failed(Throttled("busy", 25.0)).delay for _ in range(2)] == [25.0, 25.0]
    with pytest.raises(Throttled):  # a third 25 s wait would go over the 60 s budget
        policy.failed(Throttled("busy", 25.0))


@pytest.mark.parametrize("refusal", [AuthError("the worker refused the token"), PinError("certificate changed")])
def test_a_refused_token_or_certificate_is_fatal(refusal: Exception) -> None:
    policy = Redial("worker link", 0.05, 1.0)
    with pytest.raises(type(refusal)):
        policy.failed(refusal)


def test_states_keep_their_text() -> None:
    assert LinkState.CONNECTED == "connected" and f"{LinkState.FAILED}" == "failed"
