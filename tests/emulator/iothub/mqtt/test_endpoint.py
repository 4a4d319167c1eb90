"""DeviceEndpoint at the packet level: a raw MQTT client over real TLS on 127.0.0.1 port 0."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator

import pytest
import trustme

from emulator.iothub.errors import HubError
from emulator.iothub.mqtt import DeviceEndpoint, topics
from emulator.iothub.mqtt.packets import (
    ConnAck,
    Connect,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from tests.emulator.iothub.mqtt.support import (
    HUB,
    RawClient,
    device_connect,
    eventually,
    new_endpoint,
    server_context,
)
from tests.support.fakes import FakeTwins, device_key

DEVICES = [f"d{i}" for i in range(6)]


@pytest.fixture
def twins() -> FakeTwins:
    return FakeTwins(DEVICES, host=HUB)


@pytest.fixture
async def hub(twins: FakeTwins) -> AsyncIterator[tuple[DeviceEndpoint, int]]:
    endpoint = new_endpoint(twins)
    port = await endpoint.start("127.0.0.1", 0, server_context("127.0.0.1"))
    yield endpoint, port
    await endpoint.stop()


async def connected(port: int, connect: Connect, *, subscribe: bool = True) -> RawClient:
    client = await RawClient.open("127.0.0.1", port)
    client.send(connect)
    ack = await client.receive()
    assert ack == ConnAck(0, False), ack
    if subscribe:
        filters = (topics.METHODS_FILTER, topics.DESIRED_FILTER, topics.TWIN_RESPONSE_FILTER)
        client.send(Subscribe(1, tuple((f, 1) for f in filters)))
        assert await client.receive() == SubAck(1, (1, 1, 1))
    return client


async def test_connect_sets_connection_state_and_pings_are_answered(
    hub: tuple[DeviceEndpoint, int], twins: FakeTwins
) -> None:
    endpoint, port = hub
    client = await connected(port, device_connect("d0"))
    assert endpoint.is_connected("d0") and endpoint.connected_count() == 1
    assert twins.connected["d0"]
    client.send(PingReq())
    assert await client.receive() == PingResp()
    await client.close()
    await eventually(lambda: not endpoint.is_connected("d0"))
    assert twins.state_changes == [("d0", True), ("d0", False)]


@pytest.mark.parametrize(
    ("connect", "code"),
    [
        (device_connect("d0", key=device_key("d1")), 5),  # wrong key
        (device_connect("nobody"), 5),  # unknown device
        (device_connect("d0", host="other.hub"), 5),  # token and user name for another hub
        (device_connect("d0", ttl=-10), 5),  # expired token
        (Connect("d0", username=f"{HUB}/d0/?api-version=1"), 5),  # no password
        (Connect("", username=f"{HUB}/d0/?api-version=1", password=b"x"), 2),
        (Connect("d1", username=f"{HUB}/d0/?api-version=1", password=b"x"), 2),
        (Connect("d0/m1", username=f"{HUB}/d0/m1/?api-version=1", password=b"x"), 2),
        (Connect("d0", protocol_level=3), 1),
    ],
)
async def test_bad_connects_are_refused_with_the_right_code(
    hub: tuple[DeviceEndpoint, int], connect: Connect, code: int
) -> None:
    endpoint, port = hub
    client = await RawClient.open("127.0.0.1", port)
    client.send(connect)
    assert await client.receive() == ConnAck(code)
    assert await client.closed_by_server()
    assert endpoint.connected_count() == 0


async def test_twin_get_and_reported_patch(
    hub: tuple[DeviceEndpoint, int], twins: FakeTwins
) -> None:
    _, port = hub
    twins.desired["d0"].update({"interval": 5, "$version": 3})
    client = await connected(port, device_connect("d0"))
    client.send(Publish(topics.twin_get_topic("r1"), b" ", 1, 10))
    answers = [await client.receive(), await client.receive()]
    assert PubAck(10) in answers
    (response,) = [a for a in answers if isinstance(a, Publish)]
    assert response.topic == "$iothub/twin/res/200/?$rid=r1"
    assert json.loads(response.payload)["desired"] == {"interval": 5, "$version": 3}

    client.send(Publish(topics.reported_patch_topic("r2"), b'{"fw": "1.2"}', 1, 11))
    answers = [await client.receive(), await client.receive()]
    (response,) = [a for a in answers if isinstance(a, Publish)]
    assert response.topic == "$iothub/twin/res/204/?$rid=r2&$version=2"
    assert twins.reported["d0"] == {"fw": "1.2", "$version": 2}

    client.send(Publish(topics.reported_patch_topic("r3"), b"{not json", 0))
    refusal = await client.receive()
    assert isinstance(refusal, Publish)
    assert refusal.topic == "$iothub/twin/res/400/?$rid=r3"
    await client.close()


async def test_method_round_trip_and_errors(hub: tuple[DeviceEndpoint, int]) -> None:
    endpoint, port = hub
    client = await connected(port, device_connect("d0"))
    call = asyncio.create_task(
        endpoint.invoke_method("d0", "reboot", {"a": 1}, response_timeout=5, connect_timeout=0)
    )
    request = await client.receive()
    assert isinstance(request, Publish) and request.qos == 0
    assert request.topic.startswith("$iothub/methods/POST/reboot/?$rid=")
    assert json.loads(request.payload) == {"a": 1}
    rid = topics.property_bag(request.topic)["$rid"]
    client.send(Publish(topics.method_response_topic(201, rid), b'{"ok": true}', 1, 5))
    reply = await call
    assert (reply.status, reply.payload) == (201, {"ok": True})
    assert await client.receive() == PubAck(5)

    with pytest.raises(HubError) as offline:
        await endpoint.invoke_method("d3", "x", None, response_timeout=5, connect_timeout=0.2)
    assert offline.value.code == 404103
    with pytest.raises(HubError) as silent:
        await endpoint.invoke_method("d0", "x", None, response_timeout=0.3, connect_timeout=0)
    assert silent.value.code == 504101
    await client.close()


async def test_a_connected_device_without_method_subscription_is_not_ready(
    hub: tuple[DeviceEndpoint, int],
) -> None:
    endpoint, port = hub
    client = await connected(port, device_connect("d0"), subscribe=False)
    assert endpoint.is_connected("d0") and not endpoint.is_method_ready("d0")
    waiting = asyncio.create_task(endpoint.wait_method_ready("d0", 5))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    client.send(Subscribe(2, ((topics.METHODS_FILTER, 1),)))
    assert await client.receive() == SubAck(2, (1,))
    assert await waiting
    client.send(Unsubscribe(3, (topics.METHODS_FILTER,)))
    assert await client.receive() == UnsubAck(3)
    assert not endpoint.is_method_ready("d0")
    await client.close()


async def test_subscriptions_are_capped_and_qos2_is_granted_as_1(
    hub: tuple[DeviceEndpoint, int],
) -> None:
    _, port = hub
    client = await connected(port, device_connect("d0"), subscribe=False)
    client.send(
        Subscribe(
            1,
            (
                (topics.METHODS_FILTER, 2),
                ("some/other/topic", 1),
                (topics.DESIRED_FILTER, 0),
            ),
        )
    )
    assert await client.receive() == SubAck(1, (1, 0x80, 0))
    await client.close()

    endpoint = new_endpoint(FakeTwins(["d0"], host=HUB), max_subscriptions=2)
    port2 = await endpoint.start("127.0.0.1", 0, server_context("127.0.0.1"))
    try:
        client = await connected(port2, device_connect("d0"), subscribe=False)
        filters = (topics.METHODS_FILTER, topics.DESIRED_FILTER, topics.TWIN_RESPONSE_FILTER)
        client.send(Subscribe(1, tuple((f, 1) for f in filters)))
        assert await client.receive() == SubAck(1, (1, 1, 0x80))
        await client.close()
    finally:
        await endpoint.stop()


async def test_desired_patch_reaches_only_subscribed_connected_devices(
    hub: tuple[DeviceEndpoint, int], twins: FakeTwins
) -> None:
    endpoint, port = hub
    subscribed = await connected(port, device_connect("d0"))
    bare = await connected(port, device_connect("d1"), subscribe=False)
    for device_id in ("d0", "d1", "d2"):
        endpoint.push_desired(device_id, twins.desired_patch(device_id, {"x": 1}))
    patch = await subscribed.receive()
    assert isinstance(patch, Publish)
    assert patch.topic == "$iothub/twin/PATCH/properties/desired/?$version=2"
    assert json.loads(patch.payload) == {"x": 1, "$version": 2}
    bare.send(PingReq())
    assert await bare.receive() == PingResp()  # and nothing before it
    await subscribed.close()
    await bare.close()


async def test_persistent_session_keeps_subscriptions_clean_session_drops_them(
    hub: tuple[DeviceEndpoint, int],
) -> None:
    endpoint, port = hub
    first = await connected(port, device_connect("d0"))
    await first.close()
    await eventually(lambda: not endpoint.is_connected("d0"))

    again = await RawClient.open("127.0.0.1", port)
    again.send(device_connect("d0"))
    assert await again.receive() == ConnAck(0, session_present=True)
    assert endpoint.is_method_ready("d0")
    await again.close()

    clean = await RawClient.open("127.0.0.1", port)
    clean.send(device_connect("d0", clean_session=True))
    assert await clean.receive() == ConnAck(0, session_present=False)
    assert not endpoint.is_method_ready("d0")
    await clean.close()


async def test_second_connection_takes_over(
    hub: tuple[DeviceEndpoint, int], twins: FakeTwins
) -> None:
    endpoint, port = hub
    first = await connected(port, device_connect("d0"))
    second = await RawClient.open("127.0.0.1", port)
    second.send(device_connect("d0"))
    assert await second.receive() == ConnAck(0, True)
    assert await first.closed_by_server()
    assert endpoint.is_connected("d0") and endpoint.is_method_ready("d0")
    assert twins.connected["d0"]
    assert twins.state_changes == [("d0", True), ("d0", True)]  # no disconnect in between
    call = asyncio.create_task(
        endpoint.invoke_method("d0", "m", None, response_timeout=5, connect_timeout=0)
    )
    request = await second.receive()
    assert isinstance(request, Publish)
    rid = topics.property_bag(request.topic)["$rid"]
    second.send(Publish(topics.method_response_topic(200, rid), b"null"))
    assert (await call).status == 200
    await second.close()


@pytest.mark.parametrize(
    "offence",
    [
        Publish("$iothub/twin/GET/?$rid=1", b" ", 2, 9).encode(),  # QoS 2
        Publish("devices/d0/messages/unknown", b"x", 1, 9).encode(),  # unknown topic
        Publish("devices/d1/messages/events/", b"x", 1, 9).encode(),  # another device's topic
        b"\x30\xff\xff\xff\xff\x01",  # malformed length
        b"\x50\x02\x00\x01",  # PUBREC
        ConnAck(0).encode(),  # server-to-client packet
        device_connect("d0").encode(),  # second CONNECT
    ],
)
async def test_offences_close_only_that_connection(
    hub: tuple[DeviceEndpoint, int], offence: bytes
) -> None:
    endpoint, port = hub
    offender = await connected(port, device_connect("d0"))
    bystander = await connected(port, device_connect("d1"))
    offender.send_bytes(offence)
    assert await offender.closed_by_server()
    assert not endpoint.is_connected("d0")
    bystander.send(PingReq())
    assert await bystander.receive() == PingResp()
    assert endpoint.is_connected("d1")
    await bystander.close()


async def test_telemetry_is_accepted(hub: tuple[DeviceEndpoint, int]) -> None:
    _, port = hub
    client = await connected(port, device_connect("d0"))
    client.send(Publish("devices/d0/messages/events/a=1", b"{}", 1, 4))
    assert await client.receive() == PubAck(4)
    await client.close()


async def test_keepalive_expires_at_one_and_a_half_times(twins: FakeTwins) -> None:
    endpoint = new_endpoint(twins)
    port = await endpoint.start("127.0.0.1", 0, server_context("127.0.0.1"))
    try:
        client = await connected(port, device_connect("d0", keepalive=1), subscribe=False)
        started = asyncio.get_running_loop().time()
        await asyncio.sleep(0.6)
        client.send(PingReq())  # activity pushes the deadline
        assert await client.receive() == PingResp()
        assert await client.closed_by_server(timeout=4)
        silent_for = asyncio.get_running_loop().time() - started - 0.6
        assert 1.3 <= silent_for <= 2.5
        assert not endpoint.is_connected("d0")
    finally:
        await endpoint.stop()


async def test_connection_without_connect_is_dropped(twins: FakeTwins) -> None:
    endpoint = new_endpoint(twins, connect_deadline=0.5)
    port = await endpoint.start("127.0.0.1", 0, server_context("127.0.0.1"))
    try:
        client = await RawClient.open("127.0.0.1", port)
        assert await client.closed_by_server(timeout=3)
    finally:
        await endpoint.stop()


async def test_connection_closes_when_its_sas_token_expires(
    hub: tuple[DeviceEndpoint, int],
) -> None:
    endpoint, port = hub
    client = await connected(port, device_connect("d0", ttl=2), subscribe=False)
    assert endpoint.is_connected("d0")
    assert await client.closed_by_server(timeout=5)
    assert not endpoint.is_connected("d0")


async def test_device_connecting_during_connect_timeout_gets_the_call(
    hub: tuple[DeviceEndpoint, int],
) -> None:
    endpoint, port = hub
    call = asyncio.create_task(
        endpoint.invoke_method("d2", "late", [1], response_timeout=5, connect_timeout=5)
    )
    await asyncio.sleep(0.1)
    assert not call.done()
    client = await connected(port, device_connect("d2"))
    request = await client.receive()
    assert isinstance(request, Publish)
    rid = topics.property_bag(request.topic)["$rid"]
    client.send(Publish(topics.method_response_topic(200, rid), request.payload))
    reply = await call
    assert reply.payload == [1]
    await client.close()


async def test_stop_disconnects_everyone(twins: FakeTwins) -> None:
    endpoint = new_endpoint(twins)
    port = await endpoint.start("127.0.0.1", 0, server_context("127.0.0.1"))
    clients = [await connected(port, device_connect(d)) for d in DEVICES[:3]]
    assert endpoint.connected_count() == 3
    await endpoint.stop()
    assert endpoint.connected_count() == 0
    for client in clients:
        assert await client.closed_by_server()
    assert not any(twins.connected.values())


async def test_silent_tcp_connection_is_dropped_at_the_tls_handshake_deadline(
    twins: FakeTwins,
) -> None:
    endpoint = new_endpoint(twins, connect_deadline=0.5)
    port = await endpoint.start("127.0.0.1", 0, server_context("127.0.0.1"))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # no TLS hello
        async with asyncio.timeout(3):
            assert await reader.read() == b""
        writer.close()
    finally:
        await endpoint.stop()


async def test_client_that_does_not_trust_the_ca_gets_no_connection(
    hub: tuple[DeviceEndpoint, int],
) -> None:
    endpoint, port = hub
    untrusted = ssl.create_default_context()
    trustme.CA().configure_trust(untrusted)
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection("127.0.0.1", port, ssl=untrusted)
    client = await connected(port, device_connect("d0"))  # the endpoint is still fine
    assert endpoint.is_connected("d0")
    await client.close()


async def test_large_publish_crosses_tls_records(
    hub: tuple[DeviceEndpoint, int], twins: FakeTwins
) -> None:
    _, port = hub
    client = await connected(port, device_connect("d0"))
    # ~100 KB over several TLS records, in strings within IoT Hub's 4 KB value limit (the fake
    # store does not check the 32 KB section size; the registry does).
    blobs = {f"blob{i}": "x" * 4000 for i in range(25)}
    big = json.dumps(blobs).encode()
    client.send(Publish(topics.reported_patch_topic("big"), big, 1, 3))
    answers = [await client.receive(), await client.receive()]
    assert PubAck(3) in answers
    assert twins.reported["d0"] == {**blobs, "$version": 2}
    await client.close()


class BrokenTwins(FakeTwins):
    def twin_properties(self, device_id: str) -> dict[str, object]:
        raise RuntimeError("store is down")


async def test_a_failing_store_costs_only_that_connection() -> None:
    endpoint = new_endpoint(BrokenTwins(DEVICES, host=HUB))
    port = await endpoint.start("127.0.0.1", 0, server_context("127.0.0.1"))
    try:
        asking = await connected(port, device_connect("d0"))
        other = await connected(port, device_connect("d1"))
        asking.send(Publish(topics.twin_get_topic("r"), b" ", 1, 1))
        # The endpoint logs the failure's traceback before it closes: slow on a loaded machine.
        assert await asking.closed_by_server(timeout=30.0)
        other.send(PingReq())
        assert await other.receive() == PingResp()
        await other.close()
    finally:
        await endpoint.stop()
