"""Settings builders for tests and benchmarks: the agent's settings for a chain on loopback, the
channel's for a test server, and where the shipped wrapper catalogue is.

Rules: timeouts are short (seconds) so that a failing test fails fast; nothing here reads the
environment or a file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from agent.iothub import IotHubClient
from agent.settings import IotHubSettings, JobSettings, Settings, ThingWorxSettings

__all__ = ["CATALOGUE", "EMBEDDED_APP_KEY", "chain_settings", "hub_client", "thingworx_settings"]

CATALOGUE = Path(__file__).resolve().parents[2] / "config" / "wrappers"
"""The wrapper declarations shipped in config/wrappers."""
EMBEDDED_APP_KEY = "embedded-test-key"
"""The stand-in's app key in the tests of the embedded run."""


def thingworx_settings(url: str, **overrides: Any) -> ThingWorxSettings:
    """``[thingworx]`` for a test server at ``url``: 2 s timeouts, quick reconnects; ``overrides``
    (``app_key``, ``gateway_thing``, ...) applied."""
    values: dict[str, Any] = {
        "url": url,
        "connect_timeout": 2.0,
        "auth_timeout": 2.0,
        "reconnect_initial_delay": 0.05,
        "reconnect_max_delay": 0.2,
    }
    values.update(overrides)
    return ThingWorxSettings(**values)


def chain_settings(
    ws_url: str,
    app_key: str,
    connection_string: str,
    ca_file: str,
    *,
    gateway: str,
    bind: Sequence[str] = (),
    page_size: int = 100,
    wrappers_dir: Path = CATALOGUE,
    iothub: Mapping[str, Any] | None = None,
    jobs: Mapping[str, Any] | None = None,
    rollouts: Mapping[str, Any] | None = None,
    store: Mapping[str, Any] | None = None,
) -> Settings:
    """The agent's settings for the whole chain on loopback (the health server off).

    Args:
        ws_url: the stand-in's AlwaysOn URL.
        app_key: the stand-in's application key.
        connection_string: the emulator's owner connection string.
        ca_file: the emulator's CA (PEM file).
        gateway: the gateway Thing.
        bind: device Things to bind too.
        page_size: ``jobs.query_page_size``.
        wrappers_dir: ``jobs.wrappers_dir``.
        iothub: overrides of ``[iothub]`` (lanes, bounds, workers).
        jobs: overrides of ``[jobs]`` (e.g. ``watch_interval``).
        rollouts: ``[rollouts]`` (``data_dir`` above all: tests never write to ./data).
        store: ``[store]`` (``url`` of a test PostgreSQL database); None: SQLite in data_dir.
    """
    return Settings(
        thingworx=ThingWorxSettings(
            url=ws_url,
            app_key=SecretStr(app_key),
            gateway_thing=gateway,
            auto_bind=list(bind),
            connect_timeout=5.0,
            auth_timeout=5.0,
            reconnect_initial_delay=0.1,
            reconnect_max_delay=0.5,
        ),
        iothub=IotHubSettings(
            **{
                "connection_string": SecretStr(connection_string),
                "ca_file": ca_file,
                "request_timeout": 15.0,
                "workers": 16,
                **(iothub or {}),
            }
        ),
        jobs=JobSettings(
            **{
                "query_page_size": page_size,
                "wrappers_dir": str(wrappers_dir),
                # The tests poll GetJob for quick transitions: a short freshness window.
                "watch_interval": 0.2,
                **(jobs or {}),
            }
        ),
        health={"enabled": False},
        rollouts={"poll_interval": 0.2, **(rollouts or {})},
        store=dict(store or {}),
    )


def hub_client(connection_string: str, ca_file: Path) -> IotHubClient:
    """An IoT Hub client (default ``[jobs]``, 10 s requests) for an emulator's owner
    ``connection_string``, trusting its CA at ``ca_file``."""
    return IotHubClient(
        IotHubSettings(
            connection_string=SecretStr(connection_string),
            ca_file=str(ca_file),
            request_timeout=10.0,
        ),
        JobSettings(),
    )
