"""The emulator listens on ``bind_host`` while connection strings, hub.json and its certificate
name ``host``: here ``localhost`` (advertised) over ``127.0.0.1`` (bound), judged by the real
azure-iot-hub SDK verifying the emulator's CA for the advertised name."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

from azure.iot.hub import IoTHubRegistryManager

from emulator.iothub import IoTHubEmulator


async def test_advertised_host_differs_from_the_bound_one(tmp_path: Path) -> None:
    # mqtt_port=0: the shared machine's 127.0.0.1:8883 may be taken by another run.
    async with IoTHubEmulator(
        tmp_path, host="localhost", rest_port=0, mqtt_port=0, bind_host="127.0.0.1"
    ) as hub:
        assert hub.bind_host == "127.0.0.1"
        assert hub.rest_url == f"https://localhost:{hub.rest_port}"
        assert hub.owner_connection_string.startswith(f"HostName=localhost:{hub.rest_port};")
        info = json.loads(hub.hub_file.read_text())
        assert info["hostName"] == "localhost"
        assert info["mqttAddress"] == f"localhost:{hub.mqtt_port}"
        # Both listeners are on 127.0.0.1 and present a certificate valid for "localhost".
        context = ssl.create_default_context(cafile=str(hub.ca_pem_path))
        for port in (hub.rest_port, hub.mqtt_port):
            async with asyncio.timeout(5):
                _, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=context, server_hostname="localhost"
                )
            assert writer.get_extra_info("peercert") is not None
            writer.close()
        # The service SDK, given the advertised connection string, is served.
        hub.ensure_devices(1)
        rm = IoTHubRegistryManager.from_connection_string(hub.owner_connection_string)
        rm.protocol.config.connection.verify = str(hub.ca_pem_path)
        twin = await asyncio.to_thread(rm.get_twin, "device-0001")
        assert twin.device_id == "device-0001"
