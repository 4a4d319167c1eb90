"""Issue 15: hostile devices and inputs never freeze the hub emulator.

The whole emulator (registry, MQTT/TLS endpoint, REST API, job engine, SQLite), judged by a raw
MQTT client over TLS (to read IoT Hub's exact status topic), the unmodified azure-iot-device SDK,
and the unmodified azure-iot-hub SDK. Each scenario here froze or blocked the old emulator.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import ssl
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.iot.device import exceptions
from azure.iot.device.aio import IoTHubDeviceClient
from azure.iot.hub import IoTHubJobManager, IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, JobRequest, QuerySpecification
from msrest.exceptions import HttpOperationError

from emulator.iothub import IoTHubEmulator
from emulator.iothub.mqtt import topics
from emulator.iothub.mqtt.packets import ConnAck, PubAck, Publish, Subscribe
from tests.emulator.iothub.mqtt.support import RawClient, device_connect

# The device SDK only connects to port 8883: own loopback addresses per test process.
_NET = f"127.{os.getpid() % 200 + 20}.{(os.getpid() // 200) % 250 + 1}"

#: Generous for a loaded 2-core machine; the old emulator took minutes or never answered.
ANSWER_BUDGET = 10.0


def nested(depth: int, leaf: Any = 1) -> dict[str, Any]:
    """``{"k": {"k": ... leaf}}`` with ``depth`` objects below the outer one."""
    value: Any = leaf
    for _ in range(depth):
        value = {"k": value}
    return {"k": value}


async def connect_device(hub: IoTHubEmulator, device_id: str) -> RawClient:
    """A raw MQTT/TLS device of ``hub``, connected and subscribed to twin responses."""
    ctx = ssl.create_default_context(cafile=str(hub.ca_pem_path))
    device = await RawClient.open(hub.host, hub.mqtt_port, ctx)
    key = hub.device_connection_string(device_id).split("SharedAccessKey=")[1]
    device.send(device_connect(device_id, host=hub.host, key=key))
    assert await device.receive(ANSWER_BUDGET) == ConnAck(0)
    device.send(Subscribe(1, ((topics.TWIN_RESPONSE_FILTER, 1),)))
    await device.receive(ANSWER_BUDGET)  # SUBACK
    return device


async def request(device: RawClient, topic: str, payload: bytes, packet_id: int) -> str:
    """PUBLISH at QoS 1; return the topic of the twin response (the PUBACK is checked)."""
    device.send(Publish(topic, payload, 1, packet_id))
    answers = [await device.receive(ANSWER_BUDGET), await device.receive(ANSWER_BUDGET)]
    assert PubAck(packet_id) in answers
    (response,) = [p for p in answers if isinstance(p, Publish)]
    return response.topic


def registry_manager(hub: IoTHubEmulator) -> IoTHubRegistryManager:
    manager = IoTHubRegistryManager.from_connection_string(hub.owner_connection_string)
    manager.protocol.config.connection.verify = str(hub.ca_pem_path)
    return manager


def job_manager(hub: IoTHubEmulator) -> IoTHubJobManager:
    manager = IoTHubJobManager.from_connection_string(hub.owner_connection_string)
    manager.protocol.config.connection.verify = str(hub.ca_pem_path)
    return manager


async def read_back_quickly(hub: IoTHubEmulator, device_id: str) -> tuple[Any, list[Any]]:
    """Twin GET and ``SELECT * FROM devices`` through the service SDK, each within budget."""
    manager = registry_manager(hub)
    started = time.monotonic()
    twin = await asyncio.to_thread(manager.get_twin, device_id)
    result = await asyncio.to_thread(
        manager.query_iot_hub, QuerySpecification(query="SELECT * FROM devices")
    )
    assert time.monotonic() - started < ANSWER_BUDGET
    return twin, result.items


async def test_deep_report_is_refused_with_400_and_the_hub_keeps_answering(
    tmp_path: Path,
) -> None:
    async with IoTHubEmulator(tmp_path, rest_port=0, mqtt_port=0) as hub:
        (device_id,) = hub.ensure_devices(1)
        device = await connect_device(hub, device_id)
        try:
            deep = json.dumps(nested(600)).encode()
            topic = await request(device, topics.reported_patch_topic("deep"), deep, 2)
            assert topic == topics.twin_response_topic(400, "deep")
            # Past the limit by one level, and a list nested deep, are refused the same way.
            for n, bad in enumerate((nested(11), {"a": [[[[[[[[[[[1]]]]]]]]]]]}), 3):
                topic = await request(
                    device, topics.reported_patch_topic(f"bad{n}"), json.dumps(bad).encode(), n
                )
                assert topic == topics.twin_response_topic(400, f"bad{n}")
            # The connection is still up: IoT Hub's deepest valid shape is stored, GET answers.
            ok = json.dumps(nested(10, "leaf")).encode()
            topic = await request(device, topics.reported_patch_topic("ok"), ok, 9)
            assert topic == topics.twin_response_topic(204, "ok", 2)
            topic = await request(device, topics.twin_get_topic("get"), b" ", 10)
            assert topic == topics.twin_response_topic(200, "get")
        finally:
            await device.close()
        twin, items = await read_back_quickly(hub, device_id)
        assert twin.properties.reported["k"] == nested(9, "leaf")
        assert twin.properties.reported["$version"] == 2
        assert [item.device_id for item in items] == [device_id]


async def test_sdk_device_gets_an_error_for_a_deep_report_and_stays_connected(
    tmp_path: Path,
) -> None:
    async with IoTHubEmulator(tmp_path, host=f"{_NET}.71", rest_port=0) as hub:
        (device_id,) = hub.ensure_devices(1)
        client = IoTHubDeviceClient.create_from_connection_string(
            hub.device_connection_string(device_id),
            server_verification_cert=hub.ca_pem_path.read_text(),
            connection_retry=False,
        )
        try:
            await client.connect()
            # The SDK raises ServiceError("twin operation returned status 400") and its aio
            # client wraps it in ClientError.
            with pytest.raises(exceptions.ClientError) as refused:
                await asyncio.wait_for(
                    client.patch_twin_reported_properties(nested(600)), ANSWER_BUDGET
                )
            assert "status 400" in str(refused.value.__cause__)
            assert client.connected
            await client.patch_twin_reported_properties({"fine": True})
            twin = await asyncio.wait_for(client.get_twin(), ANSWER_BUDGET)
            assert twin["reported"]["fine"] is True
            assert hub.link.is_connected(device_id)
        finally:
            await client.shutdown()
        twin_doc, _ = await read_back_quickly(hub, device_id)
        assert "k" not in twin_doc.properties.reported


@pytest.mark.parametrize("depth", [600, 20_000])
async def test_a_too_deep_section_stored_by_an_older_run_is_dropped_at_load(
    tmp_path: Path, depth: int
) -> None:
    async with IoTHubEmulator(tmp_path, rest_port=0, mqtt_port=0) as hub:
        (device_id,) = hub.ensure_devices(1)
        hub.registry.patch_reported(device_id, {"site": "a"})
        key = hub.device_connection_string(device_id)
    # What an older emulator could have written: the reported section as the device sent it
    # (600 deep), or a hand-made row far deeper than json.loads can descend.
    deep_text = '{"k":' * depth + "1" + "}" * depth
    with sqlite3.connect(tmp_path / "hub.sqlite") as conn:
        (row,) = conn.execute("SELECT data FROM iothub_devices WHERE id = ?", (device_id,))
        fields = json.loads(row[0])
        fields[14] = "@DEEP@"
        text = json.dumps(fields, separators=(",", ":")).replace('"@DEEP@"', deep_text)
        conn.execute("UPDATE iothub_devices SET data = ? WHERE id = ?", (text, device_id))
    async with IoTHubEmulator(tmp_path, rest_port=0, mqtt_port=0) as hub:
        assert hub.device_connection_string(device_id) == key  # identity and keys kept
        twin, items = await read_back_quickly(hub, device_id)
        assert {k: v for k, v in twin.properties.reported.items() if k != "$metadata"} == {
            "$version": 3
        }
        assert len(items) == 1
    with sqlite3.connect(tmp_path / "hub.sqlite") as conn:
        (row,) = conn.execute("SELECT data FROM iothub_devices WHERE id = ?", (device_id,))
        assert len(row[0]) < 1000  # the row was rewritten without the deep section


def method_job(job_id: str, max_seconds: int) -> JobRequest:
    return JobRequest(
        job_id=job_id,
        type="scheduleDeviceMethod",
        cloud_to_device_method=CloudToDeviceMethod(method_name="reboot", payload={}),
        query_condition="deviceId = 'device-0001'",
        start_time=datetime.now(UTC),
        max_execution_time_in_seconds=max_seconds,
    )


async def test_unbounded_job_window_is_refused_and_never_blocks_s1(tmp_path: Path) -> None:
    async with IoTHubEmulator(tmp_path, rest_port=0, mqtt_port=0, tier="S1") as hub:
        hub.ensure_devices(1)
        manager = job_manager(hub)
        for value in (2**62, 10**12, 2**63 - 1):
            with pytest.raises(HttpOperationError) as refused:
                await asyncio.to_thread(
                    manager.create_scheduled_job,
                    f"huge-{value}",
                    method_job(f"huge-{value}", value),
                )
            assert refused.value.response.status_code == 400
            assert refused.value.response.headers["iothub-errorcode"] == "ArgumentInvalid"
            assert "maxExecutionTimeInSeconds must be between 1 and" in refused.value.response.text
        created = await asyncio.to_thread(
            manager.create_scheduled_job, "after", method_job("after", 60)
        )
        assert created.status in ("queued", "running", "scheduled")


async def test_a_job_stored_by_an_older_run_with_a_huge_window_fails_and_frees_s1(
    tmp_path: Path,
) -> None:
    async with IoTHubEmulator(tmp_path, rest_port=0, mqtt_port=0, tier="S1") as hub:
        hub.ensure_devices(1)
        manager = job_manager(hub)
        await asyncio.to_thread(manager.create_scheduled_job, "old", method_job("old", 60))
    # The older emulator accepted 2**62 and stored it; its engine then crashed on every start.
    with sqlite3.connect(tmp_path / "hub.sqlite") as conn:
        (request,) = conn.execute("SELECT request FROM jobs WHERE job_id = 'old'").fetchone()
        body = json.loads(request)
        body["maxExecutionTimeInSeconds"] = 2**62
        conn.execute(
            "UPDATE jobs SET status = 'queued', request = ?, end_time = NULL WHERE job_id = 'old'",
            (json.dumps(body),),
        )
    async with IoTHubEmulator(tmp_path, rest_port=0, mqtt_port=0, tier="S1") as hub:
        manager = job_manager(hub)
        old = await asyncio.to_thread(manager.get_scheduled_job, "old")
        assert old.status == "failed"
        assert old.failure_reason.startswith("Internal error: the stored job request is invalid")
        created = await asyncio.to_thread(
            manager.create_scheduled_job, "next", method_job("next", 60)
        )
        assert created.status in ("queued", "running", "scheduled")
