"""The agent assembled: IoT Hub client, Things and their services, AlwaysOn channel.

:class:`AgentApp` builds everything from one :class:`~agent.settings.Settings`: the
:class:`~agent.iothub.IotHubClient`, a :class:`~agent.registry.ThingRegistry` holding the gateway
Thing and the ``thingworx.auto_bind`` device Things, each with the six job services and the
wrapper services of ``jobs.wrappers_dir`` (device Things also with
``AzureIotDeviceGetConnectionState``), and the :class:`~agent.channel.AlwaysOnClient` that
serves them. :meth:`AgentApp.run` runs until :meth:`AgentApp.stop`; the entry point handles SIGTERM
by calling :meth:`AgentApp.stop`, which drains: no new calls are taken, the calls in flight finish
and are answered (up to ``thingworx.drain_timeout``), then the Things are unbound.

Rules: everything that can be wrong in the configuration (the IoT Hub connection string, a wrapper
declaration, a Thing name) fails in the constructor, before any connection is opened. The agent
never starts the bundled emulators itself: the embedded run is the entry point's business.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from agent.alwayson.rowcodec import ACCELERATOR
from agent.channel import AlwaysOnClient
from agent.iothub import IotHubClient
from agent.registry import ThingRegistry
from agent.settings import Settings
from services import JobServices
from services.device import connection_state_service
from wrappers import WrapperDeclaration, load_wrappers, wrapper_service

__all__ = ["AgentApp"]

_log = structlog.get_logger("agent.app")


class AgentApp:
    """The running agent.

    Args:
        settings: the agent's settings, with both ends configured.

    Raises:
        agent.iothub.IotHubError: the IoT Hub connection string is missing or malformed.
        wrappers.WrapperConfigError: a wrapper declaration is wrong (names file, entry, problem).
        agent.registry.RegistryError: a Thing name the registry refuses.
        agent.channel.ChannelConfigError: the ThingWorx URL is not ws:// or wss://.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.wrappers: list[WrapperDeclaration] = load_wrappers(Path(settings.jobs.wrappers_dir))
        self.client = IotHubClient(settings.iothub, settings.jobs)
        self.jobs = JobServices(self.client, settings.jobs)
        self.registry = ThingRegistry(settings.jobs)
        gateway = settings.thingworx.gateway_thing
        self._add_thing(gateway, gateway=True)
        for device in settings.thingworx.auto_bind:
            if device != gateway:
                self._add_thing(device, gateway=False)
        self.channel = AlwaysOnClient(settings.thingworx, self.registry)

    def _add_thing(self, thing: str, *, gateway: bool) -> None:
        self.registry.add_thing(thing)
        for service in self.jobs.declare(thing, gateway=gateway):
            self.registry.add_service(thing, service)
        if not gateway:
            self.registry.add_service(thing, connection_state_service(self.client, thing))
        for declaration in self.wrappers:
            self.registry.add_service(
                thing,
                wrapper_service(declaration, self.jobs, self.settings.jobs, thing, gateway=gateway),
            )

    async def run(self) -> None:
        """Serve until :meth:`stop`; the IoT Hub client is closed on the way out."""
        _log.info(
            "agent starting",
            hub=self.client.host,
            things=len(self.registry.things()),
            wrappers=[w.name for w in self.wrappers],
            row_reader=ACCELERATOR,
        )
        try:
            await self.channel.run()
        finally:
            await self.client.close()
            _log.info("agent stopped")

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the channel is connected and the Things are bound.

        Raises:
            agent.channel.ChannelNotReady: not ready within ``timeout`` seconds.
        """
        await self.channel.wait_ready(timeout)

    async def stop(self) -> None:
        """Refuse new calls, let those in flight finish and answer (up to
        ``thingworx.drain_timeout``), unbind, close the channel, and let :meth:`run` return; the
        IoT Hub client stays open until then, so the drained calls can finish."""
        await self.channel.stop()
