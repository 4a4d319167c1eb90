"""The IoT Hub emulator's device side: MQTT 3.1.1 over TLS.

- :mod:`.packets`: the sans-I/O MQTT 3.1.1 codec (packets, encoder, incremental reader).
- :mod:`.topics`: IoT Hub's topic names and MQTT topic-filter matching.
- :mod:`.endpoint`: :class:`DeviceEndpoint`, the asyncio TLS server implementing ``DeviceLink``.

Exceptions: :class:`MqttProtocolError` (malformed or unsupported MQTT) is this package's only
exception; the endpoint raises the hub's :class:`~emulator.iothub.errors.HubError` for method
calls, as the ``DeviceLink`` protocol documents.
"""

from __future__ import annotations

from emulator.iothub.mqtt.endpoint import DeviceEndpoint
from emulator.iothub.mqtt.packets import MAX_PACKET_SIZE, MqttProtocolError, PacketReader

__all__ = ["MAX_PACKET_SIZE", "DeviceEndpoint", "MqttProtocolError", "PacketReader"]
