"""The whole emulator judged end to end by both of Microsoft's SDKs over real TLS on loopback.

The device SDK always connects to port 8883, so each test serves on its own loopback address.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from azure.iot.device import MethodResponse
from azure.iot.device.aio import IoTHubDeviceClient
from azure.iot.hub import IoTHubJobManager, IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, JobRequest, QuerySpecification, Twin
from azure.iot.hub.models import TwinProperties as Props

from emulator.iothub import IoTHubEmulator

T = TypeVar("T")

# The device SDK only connects to port 8883: give each test process its own loopback addresses
# so that parallel runs (and other suites) never collide.
_NET = f"127.{os.getpid() % 200 + 20}.{(os.getpid() // 200) % 250 + 1}"


def _managers(hub: IoTHubEmulator) -> tuple[IoTHubRegistryManager, IoTHubJobManager]:
    rm = IoTHubRegistryManager.from_connection_string(hub.owner_connection_string)
    rm.protocol.config.connection.verify = str(hub.ca_pem_path)
    jm = IoTHubJobManager.from_connection_string(hub.owner_connection_string)
    jm.protocol.config.connection.verify = str(hub.ca_pem_path)
    return rm, jm


async def _until(check: Callable[[], T | None], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


async def test_sdk_device_and_service_end_to_end(tmp_path: Path) -> None:
    async with IoTHubEmulator(tmp_path, host=f"{_NET}.31", rest_port=0) as hub:
        ids = hub.ensure_devices(3)
        assert ids == ["device-0001", "device-0002", "device-0003"]
        assert hub.ensure_devices(3) == ids  # idempotent
        info = json.loads(hub.hub_file.read_text())
        assert info["ownerConnectionString"] == hub.owner_connection_string
        assert info["devices"]["device-0002"] == hub.device_connection_string("device-0002")
        assert "8883" not in hub.device_connection_string("device-0001")
        assert hub.mqtt_port == 8883

        patches: queue.Queue[dict[str, Any]] = queue.Queue()
        device = IoTHubDeviceClient.create_from_connection_string(
            hub.device_connection_string("device-0001"),
            server_verification_cert=hub.ca_pem_path.read_text(),
            connection_retry=False,
        )

        async def on_method(request: Any) -> None:
            await device.send_method_response(
                MethodResponse.create_from_method_request(
                    request, 200, {"did": request.name, "got": request.payload}
                )
            )

        async def on_patch(patch: dict[str, Any]) -> None:
            patches.put(patch)

        await device.connect()

        def set_handlers() -> None:
            # The SDK's handler setters block their thread until the SUBSCRIBE is acknowledged;
            # the emulator runs on this test's event loop, so set them from another thread.
            device.on_method_request_received = on_method
            device.on_twin_desired_properties_patch_received = on_patch

        await asyncio.to_thread(set_handlers)
        try:
            rm, jm = _managers(hub)
            await _until(lambda: hub.link.is_method_ready("device-0001") or None)
            result = await asyncio.to_thread(
                rm.invoke_device_method,
                "device-0001",
                CloudToDeviceMethod(method_name="blink", payload={"n": 2}),
            )
            assert (result.status, result.payload) == (200, {"did": "blink", "got": {"n": 2}})
            twin = await asyncio.to_thread(rm.get_twin, "device-0001")
            assert twin.connection_state == "Connected"

            await asyncio.to_thread(
                rm.update_twin,
                "device-0001",
                Twin(properties=Props(desired={"rate": 9})),
                twin.etag,
            )
            patch = await asyncio.to_thread(patches.get, True, 10)
            assert patch["rate"] == 9 and patch["$version"] == 2

            await device.patch_twin_reported_properties({"fw": "2.1"})
            reported = await asyncio.to_thread(rm.get_twin, "device-0001")
            assert reported.properties.reported["fw"] == "2.1"

            # a twin job over two devices: the connected one gets the desired patch pushed
            job = JobRequest(
                job_id="tw1",
                type="scheduleUpdateTwin",
                update_twin=Twin(
                    tags={"site": "b"}, properties=Props(desired={"mode": "eco"}), etag="*"
                ),
                query_condition="deviceId IN ['device-0001', 'device-0002']",
                start_time=datetime.now(UTC),
                max_execution_time_in_seconds=60,
            )
            await asyncio.to_thread(jm.create_scheduled_job, "tw1", job)

            def finished() -> Any:
                got = jm.get_scheduled_job("tw1")
                return got if got.status == "completed" else None

            done = await _until(finished)
            assert done.device_job_statistics.succeeded_count == 2
            patch = await asyncio.to_thread(patches.get, True, 10)
            assert patch["mode"] == "eco"
            rows = await asyncio.to_thread(
                rm.query_iot_hub,
                QuerySpecification(
                    query="SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'tw1'"
                ),
                None,
                1,
            )
            assert rows.type == "deviceJob" and rows.continuation_token
            assert rows.items[0].additional_properties["jobId"] == "tw1"
            tagged = await asyncio.to_thread(
                rm.query_iot_hub,
                QuerySpecification(query="SELECT * FROM devices WHERE tags.site = 'b'"),
            )
            assert sorted(t.device_id for t in tagged.items) == ["device-0001", "device-0002"]
        finally:
            await device.shutdown()


async def test_restart_keeps_registry_twins_and_keys(tmp_path: Path) -> None:
    async with IoTHubEmulator(tmp_path, host=f"{_NET}.32", rest_port=0, mqtt_port=0) as hub:
        hub.ensure_devices(5)
        owner = hub.owner_connection_string.split("SharedAccessKey=")[1]
        key = hub.device_connection_string("device-0004")
        rm, _ = _managers(hub)
        await asyncio.to_thread(rm.update_twin, "device-0004", Twin(tags={"keep": [1, 2]}), "*")
        ca = hub.ca_pem_path.read_bytes()
    async with IoTHubEmulator(tmp_path, host=f"{_NET}.32", rest_port=0, mqtt_port=0) as again:
        assert again.owner_connection_string.split("SharedAccessKey=")[1] == owner
        assert again.device_connection_string("device-0004") == key
        assert again.ca_pem_path.read_bytes() == ca
        rm, _ = _managers(again)
        twin = await asyncio.to_thread(rm.get_twin, "device-0004")
        assert twin.tags == {"keep": [1, 2]} and twin.connection_state == "Disconnected"
        assert len(await asyncio.to_thread(rm.get_devices, 100)) == 5
