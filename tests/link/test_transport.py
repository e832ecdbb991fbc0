"""The asyncio link layer over real sockets on 127.0.0.1 with real TLS."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import websockets

from rtcontrol.link.certs import make_certificate, server_context
from rtcontrol.link.codec import decode_message, encode_message
from rtcontrol.link.pinning import KnownHosts, PinError, PinMismatch
from rtcontrol.link.tokens import Throttle, TokenStore
from rtcontrol.link.transport import AuthError, LinkError, PreAuthLimits, bound_port, connect, serve


async def echo_handler(conn, peer) -> None:
    await conn.send(encode_message("welcome", name=peer.token_name))
    async for raw in conn:
        await conn.send(raw)


@pytest.fixture
def pki(tmp_path: Path):
    files = make_certificate(["127.0.0.1"], tmp_path / "certs")
    store = TokenStore(tmp_path / "tokens.json")
    return files, store, store.create("console")


async def test_tls_pinning_token_and_echo(tmp_path: Path, pki) -> None:
    files, store, token = pki
    server = await serve(echo_handler, "127.0.0.1", 0, tokens=store, ssl_context=server_context(files.cert, files.key))
    url = f"wss://127.0.0.1:{bound_port(server)}"
    pins = KnownHosts(tmp_path / "known_hosts")
    try:
        link = await connect(url, token=token, pins=pins)
        assert link.fingerprint == files.fingerprint
        assert link.welcome["name"] == "console"
        assert pins.get(f"127.0.0.1:{bound_port(server)}") == files.fingerprint  # pinned on first use
        assert link.conn.transport.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        payload = bytes(range(256)) * 5000
        await link.conn.send(payload)
        assert await link.conn.recv() == payload
        await link.conn.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_changed_certificate_is_refused_before_the_token_is_sent(tmp_path: Path, pki) -> None:
    files, store, token = pki
    seen_hellos: list[dict] = []

    async def handler(conn, peer) -> None:
        seen_hellos.append(peer.hello)
        await conn.send(encode_message("welcome"))

    other = make_certificate(["127.0.0.1"], tmp_path / "other")
    server = await serve(handler, "127.0.0.1", 0, tokens=store, ssl_context=server_context(other.cert, other.key))
    port = bound_port(server)
    pins = KnownHosts(tmp_path / "known_hosts")
    pins.add(f"127.0.0.1:{port}", files.fingerprint)
    try:
        with pytest.raises(PinMismatch) as info:
            await connect(f"wss://127.0.0.1:{port}", token=token, pins=pins)
        assert files.fingerprint in str(info.value) and other.fingerprint in str(info.value)
        with pytest.raises(PinError, match="was expected"):
            await connect(f"wss://127.0.0.1:{port}", token=token, expected_fingerprint=files.fingerprint)
        await asyncio.sleep(0.05)
        assert seen_hellos == []
    finally:
        server.close()
        await server.wait_closed()


async def test_bad_tokens_are_refused_and_throttled_but_a_correct_token_gets_in(pki) -> None:
    """Wrong tokens lock the address out; the console's correct token from that same address is not."""
    files, store, token = pki
    throttle = Throttle(free=2, base=30.0)
    server = await serve(
        echo_handler, "127.0.0.1", 0, tokens=store, ssl_context=server_context(files.cert, files.key),
        throttle=throttle, preauth=PreAuthLimits(wrong_token_delay=0.5),
    )
    url = f"wss://127.0.0.1:{bound_port(server)}"
    try:
        for _ in range(2):
            with pytest.raises(AuthError, match="refused the token"):
                await connect(url, token="rtc_wrong", expected_fingerprint=files.fingerprint)
        with pytest.raises(AuthError, match="locked out for 30 s"):
            await connect(url, token="rtc_wrong", expected_fingerprint=files.fingerprint)
        assert throttle.locked_for("127.0.0.1") > 20
        # during the lockout a wrong token is still refused (its answer held back up to wrong_token_delay)...
        with pytest.raises(AuthError, match="locked out for 60 s"):
            await connect(url, token="rtc_wrong", expected_fingerprint=files.fingerprint)
        # ...and the correct token from the same address gets in at once
        link = await connect(url, token=token, expected_fingerprint=files.fingerprint)
        assert link.welcome["name"] == "console"
        assert throttle.locked_for("127.0.0.1") > 20  # a success does not reset the lockout of others
        await link.conn.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_plain_websocket_only_on_loopback_and_only_when_asked(pki) -> None:
    _, store, token = pki
    with pytest.raises(LinkError, match="--insecure-loopback"):
        await serve(echo_handler, "127.0.0.1", 0, tokens=store, ssl_context=None)
    with pytest.raises(LinkError, match="only allowed on loopback"):
        await serve(echo_handler, "0.0.0.0", 0, tokens=store, ssl_context=None, insecure_loopback=True)
    server = await serve(echo_handler, "127.0.0.1", 0, tokens=store, ssl_context=None, insecure_loopback=True)
    url = f"ws://127.0.0.1:{bound_port(server)}"
    try:
        with pytest.raises(LinkError, match="was not requested"):
            await connect(url, token=token)
        with pytest.raises(LinkError, match="only allowed on loopback"):
            await connect("ws://192.0.2.1:9", token=token, allow_plain_loopback=True)
        link = await connect(url, token=token, allow_plain_loopback=True)
        assert link.fingerprint is None
        await link.conn.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_oversized_message_closes_with_a_clear_code(pki) -> None:
    files, store, token = pki
    server = await serve(echo_handler, "127.0.0.1", 0, tokens=store,
                         ssl_context=server_context(files.cert, files.key), max_size=1000)
    url = f"wss://127.0.0.1:{bound_port(server)}"
    try:
        link = await connect(url, token=token, expected_fingerprint=files.fingerprint)
        await link.conn.send(b"x" * 2000)
        with pytest.raises(websockets.ConnectionClosed) as info:
            await link.conn.recv()
        assert info.value.rcvd.code == 1009  # message too big
        # the server is still up for the next connection
        link = await connect(url, token=token, expected_fingerprint=files.fingerprint)
        await link.conn.send(encode_message("ping", t0=1.0))
        assert decode_message(await link.conn.recv())["t0"] == 1.0
        await link.conn.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_large_frame_goes_to_tls_in_slices_and_arrives_whole(pki) -> None:
    """Volumes are written in WRITE_SLICE pieces (the peer decrypts while we encrypt), still one frame."""
    from rtcontrol.link.transport import WRITE_SLICE, SlicedWritesConnection

    files, store, token = pki
    frames: list[tuple[bool, int]] = []

    async def handler(conn, peer) -> None:
        await conn.send(encode_message("welcome"))
        async for raw in conn:
            frames.append((isinstance(raw, bytes), len(raw)))
            await conn.send(raw)

    server = await serve(handler, "127.0.0.1", 0, tokens=store, ssl_context=server_context(files.cert, files.key))
    try:
        link = await connect(f"wss://127.0.0.1:{bound_port(server)}", token=token,
                             expected_fingerprint=files.fingerprint)
        assert isinstance(link.conn, SlicedWritesConnection)
        writes: list[int] = []
        real_write = link.conn.transport.write
        link.conn.transport.write = lambda data: (writes.append(len(data)), real_write(data))[1]
        payload = bytes(range(251)) * (3 * WRITE_SLICE // 251 + 7)  # > 3 slices, not a multiple
        await link.conn.send(payload)
        assert await link.conn.recv() == payload
        assert frames == [(True, len(payload))]  # one binary message
        assert len(writes) == 4 and max(writes) == WRITE_SLICE
        assert sum(writes) == len(payload) + 14  # + the frame header (8-byte length, 4-byte mask)
        writes.clear()
        await link.conn.send(b"small")
        assert await link.conn.recv() == b"small"
        assert len(writes) == 1
        await link.conn.close()
    finally:
        server.close()
        await server.wait_closed()


def _insecure_client_context():
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


async def _unauthenticated(port: int, source: str = "127.0.0.1"):
    """A websocket that never says hello (what a flood opens)."""
    return await websockets.connect(f"wss://127.0.0.1:{port}", ssl=_insecure_client_context(), compression=None,
                                    max_size=None, open_timeout=5, local_addr=(source, 0), proxy=None)


async def test_unauthenticated_large_frame_is_refused_when_its_header_arrives(pki, caplog) -> None:
    files, store, token = pki
    server = await serve(echo_handler, "127.0.0.1", 0, tokens=store, ssl_context=server_context(files.cert, files.key),
                         preauth=PreAuthLimits(max_frame=4096))
    port = bound_port(server)
    try:
        conn = await _unauthenticated(port)
        await conn.send(b"x" * 100_000)
        with pytest.raises(websockets.ConnectionClosed) as info:
            await asyncio.wait_for(conn.recv(), 5)
        assert info.value.rcvd.code == 1009 and "4096" in info.value.rcvd.reason  # message too big, the limit named
        await asyncio.sleep(0.05)
        assert "closed a connection from 127.0.0.1 before authentication" in caplog.text
        assert "Traceback" not in caplog.text
        # once authenticated, the full limit applies
        link = await connect(f"wss://127.0.0.1:{port}", token=token, expected_fingerprint=files.fingerprint)
        await link.conn.send(b"y" * 100_000)
        assert await asyncio.wait_for(link.conn.recv(), 5) == b"y" * 100_000
        await link.conn.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_unauthenticated_connections_are_capped_per_address_and_in_total(pki, caplog) -> None:
    from rtcontrol.link.transport import Throttled

    files, store, token = pki
    server = await serve(echo_handler, "127.0.0.1", 0, tokens=store, ssl_context=server_context(files.cert, files.key),
                         preauth=PreAuthLimits(per_address=3, total=5, hello_timeout=30, retry_after=1))
    port = bound_port(server)
    url = f"wss://127.0.0.1:{port}"
    idle = []
    try:
        idle += [await _unauthenticated(port, "127.0.0.2") for _ in range(3)]
        link = await connect(url, token=token, expected_fingerprint=files.fingerprint)  # another address: in
        await link.conn.close()
        with pytest.raises(websockets.InvalidStatus) as status:  # a 4th from 127.0.0.2: HTTP 429
            await _unauthenticated(port, "127.0.0.2")
        assert status.value.response.status_code == 429
        assert status.value.response.headers["Retry-After"] == "1"
        idle += [await _unauthenticated(port, "127.0.0.3") for _ in range(2)]  # 5 in all now
        with pytest.raises(Throttled, match="5 connections have not authenticated") as info:
            await connect(url, token=token, expected_fingerprint=files.fingerprint)
        assert info.value.retry_after == 1
        assert "refused a connection from 127.0.0.2" in caplog.text
        for c in idle:
            await c.close()
        await asyncio.sleep(0.1)
        link = await connect(url, token=token, expected_fingerprint=files.fingerprint)  # slots are free again
        await link.conn.close()
    finally:
        for c in idle:
            await c.close()
        server.close()
        await server.wait_closed()


async def test_a_deeply_nested_hello_is_a_bad_frame_not_a_traceback(pki, caplog) -> None:
    files, store, token = pki
    server = await serve(echo_handler, "127.0.0.1", 0, tokens=store, ssl_context=server_context(files.cert, files.key))
    port = bound_port(server)
    try:
        conn = await _unauthenticated(port)
        await conn.send("[" * 4000)  # under the pre-authentication frame limit, far over Python's recursion limit
        error = decode_message(await asyncio.wait_for(conn.recv(), 5))
        assert error["type"] == "error" and "nested deeper than" in error["message"]
        with pytest.raises(websockets.ConnectionClosed) as info:
            await asyncio.wait_for(conn.recv(), 5)
        assert info.value.rcvd.code == 4400 and "nested deeper" in info.value.rcvd.reason
        assert "RecursionError" not in caplog.text and "Traceback" not in caplog.text
    finally:
        server.close()
        await server.wait_closed()
