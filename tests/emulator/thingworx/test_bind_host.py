"""The stand-in listens on ``bind_host`` while its URLs name ``host``: here ``localhost``
(advertised) over ``127.0.0.1`` (bound), with a real AlwaysOn edge and a REST call through the
advertised URLs."""

from __future__ import annotations

import asyncio

import aiohttp
from pydantic import SecretStr

from agent.channel import AlwaysOnClient, ChannelState
from agent.registry import ThingRegistry
from agent.settings import JobSettings, ThingWorxSettings
from emulator.thingworx.server import ThingWorxStandIn

APP_KEY = "bind-host-key"


async def test_urls_name_host_and_the_socket_is_on_bind_host() -> None:
    standin = ThingWorxStandIn(APP_KEY, host="localhost", port=0, bind_host="127.0.0.1")
    await standin.start()
    try:
        assert standin.ws_url == f"ws://localhost:{standin.port}/Thingworx/WS"
        assert standin.rest_url == f"http://localhost:{standin.port}/Thingworx"
        # Bound on 127.0.0.1 exactly: a raw connection to it is accepted.
        _, writer = await asyncio.open_connection("127.0.0.1", standin.port)
        writer.close()
        await writer.wait_closed()
        # The agent's channel, given the advertised URL, authenticates and binds.
        settings = ThingWorxSettings(
            url=standin.ws_url, app_key=SecretStr(APP_KEY), connect_timeout=5, auth_timeout=5
        )
        channel = AlwaysOnClient(settings, ThingRegistry(JobSettings()))
        task = asyncio.create_task(channel.run())
        try:
            await channel.wait_ready(10)
            assert channel.state is ChannelState.READY
            assert "AzureIotHub" in standin.bound_things()
            async with (
                aiohttp.ClientSession(headers={"appKey": APP_KEY}) as http,
                http.get(f"{standin.rest_url}/Things") as reply,
            ):
                assert reply.status == 200
                assert "AzureIotHub" in await reply.text()
        finally:
            await channel.stop()
            async with asyncio.timeout(10):
                await task
        assert channel.last_error is None
    finally:
        await standin.stop()
