"""``embedded.bind_host`` flows to both embedded ends: they listen there while everything they
advertise names ``embedded.host``. Two distinct loopback addresses stand in for the container's
``0.0.0.0`` (never bound in tests on this shared machine) and its ``127.0.0.1``; with no
simulated devices nothing has to connect to the advertised address."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.embedded import EmbeddedEnds
from agent.settings import EmbeddedSettings, load_settings
from tests.support.network import fresh_loopback
from tests.support.settings import EMBEDDED_APP_KEY as APP_KEY


async def _accepts(host: str, port: int) -> bool:
    try:
        async with asyncio.timeout(5):
            _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def test_both_ends_listen_on_bind_host_and_advertise_host(tmp_path: Path) -> None:
    advertised, bound = fresh_loopback(), fresh_loopback()
    assert advertised != bound
    settings = EmbeddedSettings(
        host=advertised,
        bind_host=bound,
        thingworx_port=0,
        iothub_rest_port=0,
        devices=0,
        data_dir=str(tmp_path / "data"),
    )
    async with EmbeddedEnds(settings, APP_KEY) as ends:
        info, hub, standin = ends.info, ends.hub, ends.standin
        assert hub is not None and standin is not None
        assert info.ws_url == f"ws://{advertised}:{standin.port}/Thingworx/WS"
        assert info.thingworx_url == f"http://{advertised}:{standin.port}"
        assert info.hub_rest_url == f"https://{advertised}:{hub.rest_port}"
        assert info.mqtt_address == f"{advertised}:8883"
        assert hub.owner_connection_string.startswith(f"HostName={advertised}:")
        for port in (standin.port, hub.rest_port, hub.mqtt_port):
            assert await _accepts(bound, port), port
            assert not await _accepts(advertised, port), port


def test_bind_host_defaults_to_host_and_reads_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert EmbeddedSettings().bind_host == ""
    config = tmp_path / "agent.toml"
    config.write_text('[embedded]\nhost = "127.0.0.8"\n')
    monkeypatch.setenv("JOBS_AGENT_EMBEDDED__BIND_HOST", "0.0.0.0")
    embedded = load_settings(config).embedded
    assert (embedded.host, embedded.bind_host) == ("127.0.0.8", "0.0.0.0")
