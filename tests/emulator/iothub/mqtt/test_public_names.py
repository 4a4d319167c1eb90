"""The public names of the device-side modules exist and are what ``__all__`` says."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize(
    "module_name",
    [
        "emulator.iothub.mqtt",
        "emulator.iothub.mqtt.packets",
        "emulator.iothub.mqtt.topics",
        "emulator.iothub.mqtt.endpoint",
        "emulator.iothub.mqtt.tls",
        "emulator.iothub.fleet",
    ],
)
def test_all_lists_existing_public_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    names = module.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert not name.startswith("_")
        assert hasattr(module, name), name


def test_endpoint_satisfies_the_device_link_protocol() -> None:
    from emulator.iothub.mqtt import DeviceEndpoint
    from emulator.iothub.ports import DeviceLink

    for member in (
        "is_connected",
        "is_method_ready",
        "wait_method_ready",
        "invoke_method",
        "push_desired",
    ):
        assert member in DeviceLink.__dict__
        assert callable(getattr(DeviceEndpoint, member))
