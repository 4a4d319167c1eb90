"""DeviceEndpoint judged by the unmodified azure-iot-device SDK (aio client) on port 8883.

The SDK hard-codes port 8883, so each test binds the endpoint on a fresh loopback address
(127.0.0.20-250) with a certificate whose IP SAN is that address, and uses the address as
HostName. The SDK runs its own threads; handlers hand events to the test loop thread-safely.

Note: the aio client's handler *setters* block the calling thread until the SUBSCRIBE is
acknowledged; with the endpoint on the same event loop that would deadlock, so tests set handlers
from a worker thread (``set_handler``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.iot.device import MethodRequest, MethodResponse, exceptions
from azure.iot.device.aio import IoTHubDeviceClient

from emulator.iothub.errors import HubError
from emulator.iothub.mqtt import DeviceEndpoint
from tests.emulator.iothub.mqtt.support import (
    CA_PEM,
    connection_string,
    eventually,
    new_endpoint,
    start_on_8883,
)
from tests.support.fakes import FakeTwins, device_key

DEVICES = ["dev1", "dev2"]


class Hub:
    def __init__(self, endpoint: DeviceEndpoint, twins: FakeTwins, address: str) -> None:
        self.endpoint = endpoint
        self.twins = twins
        self.address = address
        self.clients: list[IoTHubDeviceClient] = []

    def client(self, device_id: str, **kwargs: Any) -> IoTHubDeviceClient:
        client = IoTHubDeviceClient.create_from_connection_string(
            connection_string(self.address, device_id), server_verification_cert=CA_PEM, **kwargs
        )
        self.clients.append(client)
        return client


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    twins = FakeTwins(DEVICES, host="unset")
    endpoint = new_endpoint(twins)
    address = await start_on_8883(endpoint)
    twins.host = address
    state = Hub(endpoint, twins, address)
    yield state
    for client in state.clients:
        async with asyncio.timeout(20):
            await client.shutdown()
    await endpoint.stop()


def inbox() -> tuple[asyncio.Queue[Any], Any]:
    """A queue on the test loop and a thread-safe function that feeds it."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    return queue, lambda item: loop.call_soon_threadsafe(queue.put_nowait, item)


async def set_handler(client: IoTHubDeviceClient, name: str, handler: Any) -> None:
    """Set an SDK handler property off the event loop (its setter blocks on a SUBSCRIBE)."""
    await asyncio.to_thread(setattr, client, name, handler)


async def answering(client: IoTHubDeviceClient, status: int = 200) -> asyncio.Queue[Any]:
    """Make the device answer every method with ``{"echo": payload}``; returns its requests."""
    queue, put = inbox()

    async def on_method(request: MethodRequest) -> None:
        put((request.name, request.payload))
        response = MethodResponse.create_from_method_request(
            request, status, {"echo": request.payload}
        )
        await client.send_method_response(response)

    await set_handler(client, "on_method_request_received", on_method)
    return queue


async def test_twin_get_reported_patch_method_and_desired_push(hub: Hub) -> None:
    hub.twins.desired["dev1"].update({"interval": 30, "$version": 4})
    client = hub.client("dev1")
    await client.connect()
    assert hub.endpoint.is_connected("dev1") and hub.twins.connected["dev1"]

    twin = await client.get_twin()
    assert twin["desired"] == {"interval": 30, "$version": 4}
    await client.patch_twin_reported_properties({"firmware": "1.0", "nested": {"a": 1}})
    await client.patch_twin_reported_properties({"nested": None})
    assert hub.twins.reported["dev1"] == {"firmware": "1.0", "$version": 3}

    requests = await answering(client, status=201)
    patches, put = inbox()
    await set_handler(client, "on_twin_desired_properties_patch_received", put)
    await eventually(lambda: hub.endpoint.is_method_ready("dev1"))

    reply = await hub.endpoint.invoke_method(
        "dev1", "reboot", {"delay": 5}, response_timeout=10, connect_timeout=0
    )
    assert (reply.status, reply.payload) == (201, {"echo": {"delay": 5}})
    assert await asyncio.wait_for(requests.get(), 5) == ("reboot", {"delay": 5})

    await asyncio.sleep(0.5)  # let the SDK's own post-subscribe twin GET settle
    while not patches.empty():
        patches.get_nowait()
    hub.endpoint.push_desired("dev1", hub.twins.desired_patch("dev1", {"interval": 10}))
    patch = await asyncio.wait_for(patches.get(), 5)
    assert patch == {"interval": 10, "$version": 5}


async def test_bad_key_is_refused(hub: Hub) -> None:
    client = IoTHubDeviceClient.create_from_connection_string(
        connection_string(hub.address, "dev1").replace(device_key("dev1"), device_key("dev2")),
        server_verification_cert=CA_PEM,
        connection_retry=False,
    )
    hub.clients.append(client)
    with pytest.raises(exceptions.CredentialError):
        await client.connect()
    assert not hub.endpoint.is_connected("dev1")


async def test_unanswered_and_offline_methods_fail_with_hub_codes(hub: Hub) -> None:
    client = hub.client("dev1")
    requests, put = inbox()
    await set_handler(client, "on_method_request_received", lambda r: put(r.name))  # no answer
    await client.connect()
    await eventually(lambda: hub.endpoint.is_method_ready("dev1"))
    with pytest.raises(HubError) as timeout:
        await hub.endpoint.invoke_method(
            "dev1", "slow", None, response_timeout=1, connect_timeout=0
        )
    assert timeout.value.code == 504101
    assert await asyncio.wait_for(requests.get(), 5) == "slow"

    started = asyncio.get_running_loop().time()
    with pytest.raises(HubError) as offline:
        await hub.endpoint.invoke_method(
            "dev2", "reboot", None, response_timeout=5, connect_timeout=1
        )
    assert offline.value.code == 404103
    assert asyncio.get_running_loop().time() - started >= 0.9


async def test_device_connecting_during_connect_timeout_gets_the_call(hub: Hub) -> None:
    call = asyncio.create_task(
        hub.endpoint.invoke_method(
            "dev2", "setTelemetryInterval", {"s": 2}, response_timeout=10, connect_timeout=15
        )
    )
    await asyncio.sleep(0.2)
    assert not call.done()
    client = hub.client("dev2")
    await answering(client)
    await client.connect()
    reply = await asyncio.wait_for(call, 15)
    assert (reply.status, reply.payload) == (200, {"echo": {"s": 2}})


async def test_second_connection_takes_over(hub: Hub) -> None:
    first = hub.client("dev1", connection_retry=False)
    states, put = inbox()
    await set_handler(first, "on_connection_state_change", lambda: put(first.connected))
    await first.connect()
    second = hub.client("dev1")
    second_requests = await answering(second)
    await second.connect()
    await eventually(lambda: not first.connected)
    seen = [await asyncio.wait_for(states.get(), 5)]
    while seen[-1] is not False:  # the first client was told it lost its connection
        seen.append(await asyncio.wait_for(states.get(), 5))
    await eventually(lambda: hub.endpoint.is_method_ready("dev1"))
    reply = await hub.endpoint.invoke_method(
        "dev1", "who", "second", response_timeout=10, connect_timeout=0
    )
    assert reply.payload == {"echo": "second"}
    assert await asyncio.wait_for(second_requests.get(), 5) == ("who", "second")
    assert hub.endpoint.connected_count() == 1


async def test_methods_and_desired_patches_survive_the_sas_renewal_reconnect(hub: Hub) -> None:
    # ttl 125 s: the SDK renews 120 s before expiry, i.e. reconnects after about 5 s, with
    # CleanSession 0 and without subscribing again.
    client = hub.client("dev1", sastoken_ttl=125)
    requests = await answering(client)
    patches, put = inbox()
    await set_handler(client, "on_twin_desired_properties_patch_received", put)
    await client.connect()
    await eventually(lambda: hub.endpoint.is_method_ready("dev1"))
    connects_before = hub.twins.state_changes.count(("dev1", True))

    await eventually(
        lambda: hub.twins.state_changes.count(("dev1", True)) > connects_before, timeout=15
    )
    await eventually(lambda: hub.endpoint.is_method_ready("dev1"))
    await asyncio.sleep(0.5)  # the SDK's post-reconnect twin GET
    while not patches.empty():
        patches.get_nowait()

    reply = await hub.endpoint.invoke_method(
        "dev1", "afterRenewal", {"n": 1}, response_timeout=10, connect_timeout=5
    )
    assert reply.payload == {"echo": {"n": 1}}
    assert await asyncio.wait_for(requests.get(), 5) == ("afterRenewal", {"n": 1})
    hub.endpoint.push_desired("dev1", hub.twins.desired_patch("dev1", {"mode": "eco"}))
    assert await asyncio.wait_for(patches.get(), 5) == {"mode": "eco", "$version": 2}
