"""The root of every exception the bundled emulators raise.

::

    EmulatorError
     ├── HubError                 emulator.iothub.errors: an error IoT Hub answers with
     ├── JobEngineError           emulator.iothub.jobs.exceptions: the job engine's bugs
     │    ├── IllegalTransitionError
     │    └── EngineStateError
     ├── MqttProtocolError        emulator.iothub.mqtt.packets: bytes that break MQTT 3.1.1
     ├── SasError                 emulator.iothub.sas: a bad SAS token
     ├── FleetError               emulator.iothub.fleet: a simulated device could not connect
     └── StandInError             emulator.thingworx.errors: the ThingWorx stand-in's tree

Rules: each package's tree hangs here by its base class only; names and behaviour of the
subclasses are those of their own modules. The query language (:mod:`iothub_query`) is a pure
core with its own root, ``QueryError``: the emulator translates it where it catches it, into a
``HubError`` 400 answer at the REST boundary (``emulator/iothub/rest.py``) and into a job's
failure reason in the job engine, so no ``QueryError`` leaves the emulator.
"""

from __future__ import annotations

__all__ = ["EmulatorError"]


class EmulatorError(Exception):
    """Base class of every exception of the IoT Hub emulator and the ThingWorx stand-in."""
