"""A local Azure IoT Hub emulator judged by Microsoft's own SDKs.

The service REST API over HTTPS (registry, twins, direct methods, jobs v2, device queries), the
device MQTT 3.1.1 endpoint over TLS, a job engine with IoT Hub's lifecycle and quotas, state in
SQLite so a restart loses nothing, and a simulated fleet. Run it with ``python -m emulator.iothub``
or embed it::

    async with IoTHubEmulator(Path("hub-data"), rest_port=0) as hub:
        hub.ensure_devices(10)
        print(hub.owner_connection_string)

See docs/iothub-emulator.md.
"""

from __future__ import annotations

from emulator.iothub.clock import Clock, ManualClock, SystemClock
from emulator.iothub.errors import HubError
from emulator.iothub.hub import IoTHubEmulator, device_id_for
from emulator.iothub.registry import OWNER_POLICY, Registry

__all__ = [
    "OWNER_POLICY",
    "Clock",
    "HubError",
    "IoTHubEmulator",
    "ManualClock",
    "Registry",
    "SystemClock",
    "device_id_for",
]
