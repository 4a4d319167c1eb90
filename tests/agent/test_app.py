"""AgentApp assembly: Things and services as SERVICES.md lists them, and start-up refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog.testing
from pydantic import SecretStr

from agent.app import AgentApp
from agent.iothub import IotHubError
from agent.registry import DEFAULT_VALUE_ASPECT, IS_REQUIRED_ASPECT
from agent.settings import IotHubSettings, JobSettings, Settings, ThingWorxSettings
from services import JOB_SERVICE_NAMES
from tests.support.settings import CATALOGUE
from wrappers import WrapperConfigError

HUB = "HostName=127.0.0.1:1;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5"


def _settings(wrappers_dir: Path = CATALOGUE, connection_string: str = HUB) -> Settings:
    return Settings(
        thingworx=ThingWorxSettings(
            url="ws://127.0.0.1:1/Thingworx/WS",
            app_key=SecretStr("k"),
            auto_bind=["dev-a", "it's"],
        ),
        iothub=IotHubSettings(connection_string=SecretStr(connection_string)),
        jobs=JobSettings(wrappers_dir=str(wrappers_dir), default_connect_timeout=12),
    )


def test_things_carry_the_job_and_wrapper_services() -> None:
    app = AgentApp(_settings())
    registry = app.registry
    assert registry.things() == ["AzureIotHub", "dev-a", "it's"]
    for thing in registry.things():
        names = {s.name for s in registry.services(thing)}
        assert set(JOB_SERVICE_NAMES) | {"Reboot", "SetTelemetryInterval"} <= names
    gateway = registry.lookup("AzureIotHub", "AzureIotDeviceJobScheduleDeviceMethodJob")
    device = registry.lookup("it's", "AzureIotDeviceJobScheduleDeviceMethodJob")
    assert gateway is not None and device is not None
    condition = gateway.inputs.field("queryCondition").aspects
    assert condition.get(IS_REQUIRED_ASPECT) is True
    # A device Thing is scoped to its own device: no condition to give (issue 13).
    assert "queryCondition" not in device.inputs.names
    connect = device.inputs.field("connectTimeoutInSeconds").aspects
    assert connect[DEFAULT_VALUE_ASPECT] == 12  # from settings, never unset
    reboot = registry.lookup("dev-a", "Reboot")
    assert reboot is not None and reboot.result_shape is not None
    assert reboot.result_shape.name == "AzureIotDeviceMethodResult"
    assert reboot.inputs.names == ("delaySeconds", "responseTimeoutInSeconds",
                                   "connectTimeoutInSeconds")  # fmt: skip
    gateway_reboot = registry.lookup("AzureIotHub", "Reboot")
    assert gateway_reboot is not None and gateway_reboot.result_shape is not None
    assert gateway_reboot.result_shape.name == "AzureIotDeviceJob"
    metadata = registry.metadata("dev-a")
    assert "AzureIotDeviceJobGetJob" in str(metadata)


def test_wrong_wrapper_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[[service]]\nname = "Blink"\n')
    with pytest.raises(WrapperConfigError, match=r"bad\.toml: \[\[service\]\] #1 \(Blink\)"):
        AgentApp(_settings(tmp_path))


def test_missing_hub_connection_string_stops_start_up() -> None:
    with pytest.raises(IotHubError, match="connection_string"):
        AgentApp(_settings(connection_string=""))


async def test_start_log_says_which_row_reader_runs() -> None:
    """The start line names the InfoTable row reader in use, so an image built without a C
    compiler (pure-Python reader, about 2.4 times slower decoding) shows in the log."""
    from agent.alwayson import ACCELERATED

    app = AgentApp(_settings(), health=False)
    app.channel.run = _return_at_once  # type: ignore[method-assign]
    with structlog.testing.capture_logs() as logs:
        async with app:
            pass
    start = next(entry for entry in logs if entry["event"] == "agent starting")
    assert start["row_reader"].startswith("on" if ACCELERATED else "off")


async def _return_at_once() -> None:
    return None
