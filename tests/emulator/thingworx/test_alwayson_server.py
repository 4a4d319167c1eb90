"""The stand-in's AlwaysOn server side, driven by a raw client that behaves like the C SDK."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct

import aiohttp
import pytest

from agent.alwayson import (
    BIND_REFUSED_STATUS,
    BaseType,
    Bind,
    Characteristic,
    DataShape,
    EntityType,
    FieldDefinition,
    InfoTable,
    Method,
    Request,
    Response,
    ServiceMetadata,
    Status,
    decode_message,
    encode_message,
)
from emulator.thingworx.server import ThingWorxStandIn
from tests.emulator.thingworx.conftest import APP_KEY, EdgeFactory
from tests.emulator.thingworx.csdk_edge import CsdkEdge, HandshakeFailed, RawSocket

ECHO = ServiceMetadata(
    "Echo", "", DataShape.of(FieldDefinition("text", BaseType.STRING)), BaseType.STRING
)


def _echo(edge: CsdkEdge, *, trailing: bytes = b"") -> None:
    def handler(request: Request) -> Response:
        assert request.params is not None
        text = request.params.rows[0]["text"]
        return Response(
            Status.SUCCESS,
            request.request_id,
            request.endpoint_id,
            edge.session_id,
            None,
            InfoTable.single("result", BaseType.STRING, text),
        )

    edge.add_service(ECHO, handler)


async def _call(
    http: aiohttp.ClientSession, standin: ThingWorxStandIn, thing: str, **inputs: object
) -> tuple[int, object]:
    url = f"{standin.rest_url}/Things/{thing}/Services/Echo"
    async with http.post(url, json=inputs, headers={"Accept": "application/json"}) as r:
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, await r.text()


async def _served_edge(
    connect_edge: EdgeFactory, standin: ThingWorxStandIn, thing: str = "Gw1", **kw: object
) -> CsdkEdge:
    edge = await connect_edge(**kw)
    _echo(edge)
    edge.serve()
    assert (await edge.bind(thing)).ok
    await standin.wait_metadata(thing, 5)
    return edge


# -- upgrade ---------------------------------------------------------------------------------


async def test_upgrade_answer_is_what_the_c_sdk_checks(standin: ThingWorxStandIn) -> None:
    sock = await RawSocket.connect(standin.port, app_key=APP_KEY, deflate=True)
    try:
        assert sock.status_line.startswith("HTTP/1.1 101")
        assert sock.header("Connection") == "Upgrade"
        assert sock.header("Upgrade") == "websocket"
        assert sock.header("Sec-WebSocket-Extensions") == "permessage-deflate"
        assert sock.deflate
    finally:
        await sock.close()


async def test_accept_key_matches_rfc6455(standin: ThingWorxStandIn) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", standin.port)
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    writer.write(
        (
            "GET /Thingworx/WS HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Host: 127.0.0.1\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
        ).encode()
    )
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
    writer.close()
    expected = base64.b64encode(
        hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    ).decode()
    assert expected == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert f"Sec-WebSocket-Accept: {expected}\r\n" in head
    assert "Sec-WebSocket-Extensions" not in head  # not offered, not answered


async def test_wrong_app_key_header_is_refused_with_401(standin: ThingWorxStandIn) -> None:
    with pytest.raises(HandshakeFailed) as info:
        await RawSocket.connect(standin.port, app_key="wrong")
    assert info.value.status == 401


async def test_missing_app_key_and_frame_size_are_accepted(standin: ThingWorxStandIn) -> None:
    sock = await RawSocket.connect(standin.port, app_key=None, max_frame_size=None)
    edge = CsdkEdge(sock)
    try:
        assert (await edge.auth(APP_KEY)).ok
        assert standin.sessions()[0].link.max_frame_size == 8192
    finally:
        await edge.close()


async def test_plain_get_of_the_websocket_path_is_400(standin: ThingWorxStandIn) -> None:
    async with aiohttp.ClientSession() as s, s.get(standin.ws_url.replace("ws:", "http:")) as r:
        assert r.status == 400


# -- AUTH and BIND ---------------------------------------------------------------------------


async def test_auth_byte_exact_from_reference_11_1() -> None:
    server = ThingWorxStandIn("abc", port=0)
    port = await server.start()
    sock = await RawSocket.connect(port, app_key="abc")
    try:
        auth = bytes.fromhex("01 14 00 00 00 01 00 00 00 00 FF FF FF FF 00 01 06") + b"appKey"
        await sock.send_message(auth + b"\x03abc")
        reply = await sock.recv_message()
        assert reply is not None and len(reply) == 17
        assert reply[:10] == bytes.fromhex("01 40 00 00 00 01 00 00 00 00")
        session = struct.unpack(">I", reply[10:14])[0]
        assert session not in (0, 0xFFFFFFFF)
        assert reply[14:] == bytes.fromhex("00 00 FF")
        # §11.3: BIND of "Gw1" with that session id is answered 00 FF with the same request id.
        bind = bytes.fromhex("01 0A 00 00 00 02 00 00 00 00") + reply[10:14]
        await sock.send_message(bind + bytes.fromhex("00 00 00 01 03 47 77 31"))
        answer = await sock.recv_message()
        assert (
            answer
            == bytes.fromhex("01 40 00 00 00 02 00 00 00 00") + reply[10:14] + b"\x00\x00\xff"
        )
        assert await server.wait_bound("Gw1", 2)
    finally:
        await sock.close()
        await server.stop()


async def test_bad_app_key_in_auth_gets_0x81_then_close(standin: ThingWorxStandIn) -> None:
    sock = await RawSocket.connect(standin.port, app_key=None)
    edge = CsdkEdge(sock)
    try:
        answer = await edge.auth("not-the-key")
        assert answer.status is Status.UNAUTHORIZED
        assert answer.status.value == 0x81
        assert await sock.recv_message() is None  # the server's close frame
        assert sock.close_payload is not None and sock.close_payload[:2] == b"\x03\xf0"  # 1008
    finally:
        await edge.close()


async def test_bind_and_requests_before_auth_are_refused(
    standin: ThingWorxStandIn, connect_edge: EdgeFactory
) -> None:
    edge = await connect_edge(auth=False)
    answer = await edge.bind("Gw1")
    assert answer.status is Status.UNAUTHORIZED
    assert standin.bound_things() == []
    # The link stays usable: AUTH, then the same BIND succeeds.
    assert (await edge.auth(APP_KEY)).ok
    assert (await edge.bind("Gw1")).ok


async def test_bind_then_notify_property_update_then_get_metadata(
    standin: ThingWorxStandIn, connect_edge: EdgeFactory
) -> None:
    edge = await connect_edge()
    assert (await edge.bind("Gw1")).ok
    assert standin.bound_things() == ["Gw1"]
    notify = await edge.recv()
    assert isinstance(notify, Request)
    raw = edge.sock.frames[-1].payload
    # POST, THING "Gw1", SERVICES "NotifyPropertyUpdate", 0 headers, params NOTHING.
    assert raw[0:2] == b"\x01\x03" and raw[14] == 0
    assert struct.unpack(">I", raw[10:14])[0] == edge.session_id
    assert raw[15:] == b"\x0a\x03Gw1\x02\x14NotifyPropertyUpdate\x00\xff"
    await edge.send(await edge.answer(notify))
    metadata = await edge.recv()
    assert isinstance(metadata, Request)
    assert metadata.target == "GetMetadata" and metadata.params is None
    assert metadata.endpoint_id == notify.endpoint_id  # per-connection constant
    assert metadata.request_id != notify.request_id
    await edge.send(await edge.answer(metadata))
    entry = await standin.wait_metadata("Gw1", 2)
    assert entry.metadata is not None and "GetMetadata" in entry.metadata.services


async def test_metadata_with_extra_keys_and_ems_shape_is_read(
    standin: ThingWorxStandIn, connect_edge: EdgeFactory
) -> None:
    edge = await connect_edge()
    await edge.bind("Gw1")
    notify = await edge.recv()
    assert isinstance(notify, Request)
    await edge.send(await edge.answer(notify))
    request = await edge.recv()
    assert isinstance(request, Request)
    ems = {
        "name": "Gw1",
        "type": "Things",
        "implementedShapes": {},
        "extraTopLevel": [1, 2],
        "propertyDefinitions": {
            "Temp": {"name": "Temp", "baseType": "NUMBER", "ordinal": 1, "category": "", "tags": []}
        },
        "serviceDefinitions": {
            "Echo": {
                "name": "Echo",
                "category": "x",
                "Inputs": {
                    "fieldDefinitions": {
                        "text": {"name": "text", "baseType": "STRING", "ordinal": 1, "aspects": {}}
                    }
                },
                "Outputs": {
                    "name": "result",
                    "baseType": "STRING",
                    "fieldDefinitions": {"result": {"name": "result", "baseType": "STRING"}},
                },
            }
        },
    }
    await edge.send(
        Response(
            Status.SUCCESS,
            request.request_id,
            request.endpoint_id,
            edge.session_id,
            None,
            InfoTable.single("result", BaseType.JSON, ems),
        )
    )
    entry = await standin.wait_metadata("Gw1", 2)
    assert entry.metadata is not None
    assert entry.metadata.services["Echo"].inputs.names == ("text",)


async def test_multipart_bind_is_reassembled(
    standin: ThingWorxStandIn, connect_edge: EdgeFactory
) -> None:
    edge = await connect_edge()
    names = tuple(f"Thing-{i:04d}-{'x' * 40}" for i in range(400))  # ~20 KB body
    frames = encode_message(Bind(50, edge.session_id, names), chunk_size=8192)
    assert len(frames) >= 3
    for frame in frames:
        await edge.sock.send_message(frame)
    edge.serve()
    await standin.wait_bound(names[-1], 5)
    assert len(standin.bound_things()) == 400


# -- keep-alive ------------------------------------------------------------------------------


async def test_client_pings_get_pongs_and_server_never_pings(
    standin: ThingWorxStandIn, connect_edge: EdgeFactory, http: aiohttp.ClientSession
) -> None:
    edge = await connect_edge()
    await edge.sock.send_ping(b"12:34:56")  # the C SDK's payload: local time
    frame = await edge.sock.recv_frame()
    assert frame.opcode == 0xA and frame.payload == b"12:34:56"
    await edge.sock.send_pong(b"unsolicited")  # ignored
    # Idle for a while without ever answering anything: no ping arrives, the link stays.
    with pytest.raises(TimeoutError):
        await edge.sock.recv_frame(timeout=1.5)
    _echo(edge)
    edge.serve()
    assert (await edge.bind("Gw1")).ok
    await standin.wait_metadata("Gw1", 2)
    assert await _call(http, standin, "Gw1", text="still here") == (
        200,
        _string_result("still here"),
    )
    assert edge.sock.pings == []


async def test_keep_alive_and_unknown_codes_are_ignored(
    standin: ThingWorxStandIn, connect_edge: EdgeFactory, http: aiohttp.ClientSession
) -> None:
    edge = await connect_edge()
    sid = struct.pack(">I", edge.session_id)
    await edge.sock.send_message(bytes.fromhex("01 1F 00 00 00 09 00 00 00 00") + sid + b"\x00")
    await edge.sock.send_message(bytes.fromhex("01 33 00 00 00 0A 00 00 00 00") + sid + b"\x00\x00")
    _echo(edge)
    edge.serve()
    assert (await edge.bind("Gw1")).ok
    await standin.wait_metadata("Gw1", 2)
    assert (await _call(http, standin, "Gw1", text="x"))[0] == 200


def _string_result(text: str) -> dict[str, object]:
    return {
        "dataShape": {
            "fieldDefinitions": {
                "result": {
                    "name": "result",
                    "baseType": "STRING",
                    "description": "",
                    "aspects": {},
                    "ordinal": 0,
                }
            }
        },
        "rows": [{"result": text}],
    }


# -- what a real edge sends that ours would not ----------------------------------------------


async def test_trailing_bytes_after_every_body_are_ignored(
    standin: ThingWorxStandIn, connect_edge: EdgeFactory, http: aiohttp.ClientSession
) -> None:
    edge = await connect_edge()
    original_send = edge.sock.send_message

    async def padded(payload: bytes, **kw: object) -> None:
        await original_send(payload + b"\x00\x00\x00junk")

    # From here on the BIND, every answer (NotifyPropertyUpdate, GetMetadata, Echo) is padded.
    edge.sock.send_message = padded  # type: ignore[method-assign]
    _echo(edge)
    edge.serve()
    assert (await edge.bind("Gw1")).ok
    await standin.wait_metadata("Gw1", 2)
    assert await _call(http, standin, "Gw1", text="pad") == (200, _string_result("pad"))


async def test_padded_request_from_the_edge_is_answered(
    standin: ThingWorxStandIn, connect_edge: EdgeFactory
) -> None:
    edge = await connect_edge()
    request = Request(
        Method.POST, 77, 0, edge.session_id, EntityType.THING, "Gw1", Characteristic.SERVICES,
        "GetPropertySubscriptions",
        params=InfoTable.single("options", BaseType.JSON, {"hasDeadband": True}),
    )  # fmt: skip
    (payload,) = encode_message(request)
    await edge.sock.send_message(payload + b"\x00\x00")
    answer = await edge.recv()
    assert isinstance(answer, Response) and answer.ok and answer.request_id == 77
    assert answer.content is not None
    assert answer.content.shape.names == ("edgeName", "pushType", "pushThreshold")


async def test_body_split_over_two_plain_messages_is_joined(
    standin: ThingWorxStandIn, connect_edge: EdgeFactory
) -> None:
    edge = await connect_edge()
    _echo(edge)
    assert (await edge.bind("Gw1")).ok
    notify = await edge.recv()
    assert isinstance(notify, Request)
    await edge.send(await edge.answer(notify))
    request = await edge.recv()
    assert isinstance(request, Request) and request.target == "GetMetadata"
    (whole,) = encode_message(await edge.answer(request))
    # The C SDK bug of §12.1: header + first slice, then header + the rest, no multipart.
    await edge.sock.send_message(whole[:15] + whole[15:40])
    await edge.sock.send_message(whole[:15] + whole[40:])
    entry = await standin.wait_metadata("Gw1", 3)
    assert entry.metadata is not None and "Echo" in entry.metadata.services


async def test_compressed_fragmented_client_messages_with_rsv1_everywhere(
    standin: ThingWorxStandIn, connect_edge: EdgeFactory, http: aiohttp.ClientSession
) -> None:
    edge = await connect_edge(deflate=True)
    assert edge.sock.deflate
    _echo(edge)
    original = edge.sock.send_message

    async def fragmented(payload: bytes, **kw: object) -> None:
        await original(payload, fragment=7)

    edge.sock.send_message = fragmented  # type: ignore[method-assign]
    edge.serve()
    assert (await edge.bind("Gw1")).ok
    await standin.wait_metadata("Gw1", 3)
    for i in range(3):  # context takeover across messages
        text = f"compressed {i} " * 50
        assert await _call(http, standin, "Gw1", text=text) == (200, _string_result(text))
    assert all(not f.rsv1 for f in edge.sock.frames)  # our frames go uncompressed by default


async def test_server_compression_keeps_frames_within_the_limit(connect_edge: EdgeFactory) -> None:
    server = ThingWorxStandIn(APP_KEY, port=0, compress=True, call_timeout=2)
    port = await server.start()
    sock = await RawSocket.connect(port, app_key=APP_KEY, deflate=True)
    edge = CsdkEdge(sock)
    try:
        assert (await edge.auth(APP_KEY)).ok
        _echo(edge)
        edge.serve()
        assert (await edge.bind("Gw1")).ok
        await server.wait_metadata("Gw1", 3)
        async with aiohttp.ClientSession(headers={"appKey": APP_KEY}) as http:
            text = "abc" * 30000
            assert await _call(http, server, "Gw1", text=text) == (200, _string_result(text))
            random_text = base64.b85encode(bytes(range(256)) * 200).decode()
            status, _ = await _call(http, server, "Gw1", text=random_text)
            assert status == 200
        assert any(f.rsv1 for f in sock.frames)
        assert sock.max_frame_seen() <= 8192
    finally:
        await edge.close()
        await server.stop()


# -- multipart -------------------------------------------------------------------------------


async def test_result_of_25_chunks_is_reassembled(
    standin: ThingWorxStandIn, connect_edge: EdgeFactory, http: aiohttp.ClientSession
) -> None:
    edge = await connect_edge()
    big = "x" * 200_000

    def handler(request: Request) -> Response:
        return Response(
            Status.SUCCESS, request.request_id, request.endpoint_id, edge.session_id, None,
            InfoTable.single("result", BaseType.STRING, big),
        )  # fmt: skip

    edge.add_service(ECHO, handler)
    frames = encode_message(
        handler(
            Request(Method.POST, 1, 0, 0, EntityType.THING, "Gw1", Characteristic.SERVICES, "Echo")
        ),
        chunk_size=8192,
    )
    assert len(frames) == 25 and frames[0][15:21] == bytes.fromhex("00 01 00 19 20 00")
    edge.serve()
    assert (await edge.bind("Gw1")).ok
    await standin.wait_metadata("Gw1", 3)
    assert await _call(http, standin, "Gw1", text="big") == (200, _string_result(big))


@pytest.mark.parametrize("frame_size", [8192, 4096])
async def test_large_request_goes_multipart_with_entity_prefix_in_every_chunk(
    standin: ThingWorxStandIn, connect_edge: EdgeFactory, http: aiohttp.ClientSession,
    frame_size: int,
) -> None:  # fmt: skip
    edge = await _served_edge(connect_edge, standin, max_frame_size=frame_size)
    text = "y" * 165_000
    before = len(edge.sock.frames)
    assert await _call(http, standin, "Gw1", text=text) == (200, _string_result(text))
    chunks = [f.payload for f in edge.sock.frames[before:] if f.payload[1] == 0x03]
    assert len(chunks) >= 165_000 // frame_size
    for i, chunk in enumerate(chunks, start=1):
        assert len(chunk) <= frame_size
        assert chunk[14] == 1
        chunk_id, count, size = struct.unpack(">HHH", chunk[15:21])
        assert (chunk_id, count, size) == (i, len(chunks), frame_size)
        assert chunk[21:26] == b"\x0a\x03Gw1"
    assert edge.sock.max_frame_seen() <= frame_size


# -- binding across connections, malformed input ---------------------------------------------


async def test_first_in_wins_refuses_a_second_bind_whole_in_the_wire_form(
    standin: ThingWorxStandIn, connect_edge: EdgeFactory, http: aiohttp.ClientSession
) -> None:
    assert standin.registry.bind_policy == "first-in-wins"  # ThingWorx's default
    first = await _served_edge(connect_edge, standin)
    second = await connect_edge()
    second.serve()
    # One BIND naming a free Thing and a held one: refused whole, BIND_REFUSED_STATUS (0x83),
    # the reason naming the held Thing and the connection holding it; nothing of it is bound.
    answer = await second.bind("Free1", "Gw1")
    assert answer.status is Status.FORBIDDEN and answer.status.value == BIND_REFUSED_STATUS
    assert answer.reason is not None and "'Gw1'" in answer.reason and "conn-" in answer.reason
    assert "first-in-wins" in answer.reason
    assert standin.bound_things() == ["Gw1"]
    assert (await _call(http, standin, "Gw1", text="hi"))[0] == 200  # still the first's
    # The second connection stays up and may bind once the holder is gone.
    await first.close()
    await standin.registry.wait_unbound("Gw1", 3)
    _echo(second)
    assert (await second.bind("Free1", "Gw1")).ok
    assert standin.bound_things() == ["Free1", "Gw1"]
    await second.close()


async def test_last_bind_wins(
    standin: ThingWorxStandIn, connect_edge: EdgeFactory, http: aiohttp.ClientSession
) -> None:
    standin.registry.bind_policy = "last-in-wins"  # the policy under test (default: first-in)
    first = await _served_edge(connect_edge, standin)
    second = await connect_edge()

    def tagged(request: Request) -> Response:
        return Response(
            Status.SUCCESS, request.request_id, request.endpoint_id, second.session_id, None,
            InfoTable.single("result", BaseType.STRING, "second"),
        )  # fmt: skip

    second.add_service(ECHO, tagged)
    second.serve()
    assert (await second.bind("Gw1")).ok
    await standin.wait_metadata("Gw1", 3)
    assert (await _call(http, standin, "Gw1", text="?"))[1] == _string_result("second")
    # The older connection's UNBIND and disconnect no longer affect the Thing.
    assert (await first.bind("Gw1", unbind=True)).ok
    await first.close()
    await asyncio.sleep(0.1)
    assert standin.bound_things() == ["Gw1"]
    await second.close()
    for _ in range(50):
        if not standin.bound_things():
            break
        await asyncio.sleep(0.02)
    assert (await _call(http, standin, "Gw1", text="?"))[0] == 503


async def test_malformed_request_gets_bad_request_and_link_survives(
    standin: ThingWorxStandIn, connect_edge: EdgeFactory, http: aiohttp.ClientSession
) -> None:
    edge = await connect_edge()
    sid = struct.pack(">I", edge.session_id)
    # POST with entity type 0x99 (undefined): does not parse.
    await edge.sock.send_message(
        bytes.fromhex("01 03 00 00 00 2A 00 00 00 00") + sid + b"\x00\x99\x03Gw1\x02\x01x\x00\xff"
    )
    answer = await edge.recv()
    assert isinstance(answer, Response)
    assert answer.status is Status.BAD_REQUEST and answer.request_id == 0x2A
    _echo(edge)
    edge.serve()
    assert (await edge.bind("Gw1")).ok
    await standin.wait_metadata("Gw1", 3)
    assert (await _call(http, standin, "Gw1", text="ok"))[0] == 200


async def test_response_decodes_as_the_reference_shows() -> None:
    # §11.5 checked through the codec the stand-in uses (INTEGER 42 in column "result").
    data = bytes.fromhex(
        "01 40 00 00 00 10 00 00 00 05 00 00 00 2A 00 00 05 01 06 72 65 73 75 6C 74 00 16 00 00"
        " 00 01 00 01 16 00 00 00 2A 00"
    )
    message = decode_message(data)
    assert isinstance(message, Response)
    assert message.content is not None and message.content.rows == [{"result": 42}]
