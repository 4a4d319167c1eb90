"""The embedded run's two ends: the bundled IoT Hub emulator (with its simulated fleet) and the
ThingWorx stand-in, on loopback, and the agent settings that point at them.

:class:`EmbeddedEnds` starts, in order, the IoT Hub emulator (``embedded.data_dir``, HTTPS on
``embedded.host:embedded.iothub_rest_port``, MQTT/TLS on 8883 of the same address), devices
``device-0001`` .. ``device-{embedded.devices}`` and a fleet connecting them (``offline_share``
left offline), and the stand-in (REST, web console and AlwaysOn on
``embedded.host:embedded.thingworx_port``). With ``embedded.bind_host`` set (``0.0.0.0`` in the
container) both ends listen there instead, while URLs, connection strings and the emulator's
certificate still name ``embedded.host``: the address clients use.
:meth:`EmbeddedEnds.agent_settings` then gives the agent's settings: the stand-in's websocket URL
and app key, the emulator's owner connection string and CA file, and a device Thing per simulated
device.

The embedded run's composition root is :class:`EmbeddedRun`: ``async with EmbeddedRun(settings,
app_key) as app`` starts the ends, then the same :class:`~agent.app.AgentApp` as a configured run,
on :meth:`EmbeddedEnds.agent_settings`; leaving it stops the agent, then the ends.

Rules: nothing here touches the process environment (settings objects are passed); every part
that started is stopped by :meth:`EmbeddedEnds.stop`, in reverse order, even when a later part
failed to start; the agent is assembled by :class:`~agent.app.AgentApp` alone.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import structlog
from pydantic import SecretStr

from agent.app import AgentApp
from agent.errors import AgentError
from agent.settings import EmbeddedSettings, Settings
from emulator.iothub import IoTHubEmulator
from emulator.iothub.fleet import Fleet, FleetError
from emulator.thingworx.server import ThingWorxStandIn

__all__ = ["EmbeddedEnds", "EmbeddedError", "EmbeddedInfo", "EmbeddedRun", "new_app_key"]

_log = structlog.get_logger("agent.embedded")


class EmbeddedError(AgentError):
    """An embedded end could not start (port taken, fleet refused...): the message says which."""


def new_app_key() -> str:
    """A fresh random application key (ThingWorx keys are UUIDs; any string works here)."""
    return secrets.token_urlsafe(18)


@dataclass(frozen=True)
class EmbeddedInfo:
    """Where the embedded ends are, once started.

    Attributes:
        thingworx_url: ``http://host:port`` (web console at ``/``).
        rest_url: ``http://host:port/Thingworx`` (the REST convention's root).
        ws_url: the AlwaysOn websocket URL the agent connects to.
        hub_rest_url: the emulator's HTTPS service API.
        mqtt_address: ``host:8883``.
        ca_pem: the emulator's CA certificate (trusted by the agent for the hub's HTTPS).
        hub_file: the emulator's hub.json (connection strings of the hub and its devices).
        devices: ids of the simulated devices.
        offline: ids of the devices left offline.
    """

    thingworx_url: str
    rest_url: str
    ws_url: str
    hub_rest_url: str
    mqtt_address: str
    ca_pem: Path
    hub_file: Path
    devices: tuple[str, ...]
    offline: tuple[str, ...]


class EmbeddedEnds:
    """The IoT Hub emulator, its fleet and the ThingWorx stand-in, started and stopped together.

    Args:
        settings: the ``[embedded]`` settings.
        app_key: the stand-in's application key.
    """

    def __init__(
        self, settings: EmbeddedSettings, app_key: str, *, request_timeout: float = 30.0
    ) -> None:
        if not app_key:
            raise ValueError("an application key is required")
        self._settings = settings
        self.app_key = app_key
        self.request_timeout = request_timeout
        """The stand-in's wait for the agent's answers: ``thingworx.request_timeout``, like the
        real platform's request timeout (30 s)."""
        self.hub: IoTHubEmulator | None = None
        self.fleet: Fleet | None = None
        self.standin: ThingWorxStandIn | None = None
        self._info: EmbeddedInfo | None = None

    @property
    def info(self) -> EmbeddedInfo:
        """Where the ends are (after :meth:`start`)."""
        if self._info is None:
            raise RuntimeError("the embedded ends are not started")
        return self._info

    async def start(self) -> EmbeddedInfo:
        """Start the emulator, its fleet and the stand-in.

        Returns:
            Where they are.

        Raises:
            EmbeddedError: a part could not start (everything started is stopped again).
        """
        s = self._settings
        try:
            self.hub = IoTHubEmulator(
                Path(s.data_dir),
                host=s.host,
                rest_port=s.iothub_rest_port,
                tier=s.tier or None,
                bind_host=s.bind_host or None,
            )
            try:
                await self.hub.start()
            except OSError as exc:
                self.hub = None
                raise EmbeddedError(
                    f"the IoT Hub emulator cannot listen on {s.bind_host or s.host} (HTTPS port "
                    f"{s.iothub_rest_port}, MQTT 8883): {exc}; is another run using it? "
                    "Set JOBS_AGENT_EMBEDDED__HOST to another 127.x.y.z address"
                ) from exc
            hub = self.hub
            ids = hub.ensure_devices(s.devices)
            offline: list[str] = []
            if ids:
                self.fleet = hub.fleet(
                    ids, offline_share=s.offline_share, answer_delay=s.answer_delay
                )
                offline = self.fleet.offline_at_start()
                try:
                    await self.fleet.start()
                except FleetError as exc:
                    raise EmbeddedError(f"the simulated fleet did not connect: {exc}") from exc
            self.standin = ThingWorxStandIn(
                self.app_key,
                host=s.host,
                port=s.thingworx_port,
                call_timeout=self.request_timeout,
                bind_host=s.bind_host or None,
            )
            try:
                await self.standin.start()
            except OSError as exc:
                self.standin = None
                raise EmbeddedError(
                    f"the ThingWorx stand-in cannot listen on {s.bind_host or s.host}:"
                    f"{s.thingworx_port}: {exc}; "
                    "set JOBS_AGENT_EMBEDDED__THINGWORX_PORT to a free port"
                ) from exc
        except BaseException:
            await self.stop()
            raise
        standin = self.standin
        root = f"http://{s.host}:{standin.port}"
        self._info = EmbeddedInfo(
            thingworx_url=root,
            rest_url=standin.rest_url,
            ws_url=standin.ws_url,
            hub_rest_url=hub.rest_url,
            mqtt_address=f"{hub.host}:{hub.mqtt_port}",
            ca_pem=hub.ca_pem_path,
            hub_file=hub.hub_file,
            devices=tuple(ids),
            offline=tuple(offline),
        )
        _log.info(
            "embedded ends started",
            thingworx=root,
            hub=hub.rest_url,
            devices=len(ids),
            offline=len(offline),
        )
        return self._info

    async def stop(self) -> None:
        """Stop the stand-in, the fleet and the emulator (whatever started)."""
        standin, self.standin = self.standin, None
        fleet, self.fleet = self.fleet, None
        hub, self.hub = self.hub, None
        if standin is not None:
            await standin.stop()
        if fleet is not None:
            await fleet.stop()
        if hub is not None:
            await hub.stop()
        self._info = None

    async def __aenter__(self) -> EmbeddedEnds:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def agent_settings(self, settings: Settings) -> Settings:
        """``settings`` with both ends pointed at the embedded ones.

        The ThingWorx URL and app key become the stand-in's, the IoT Hub connection string the
        emulator's owner string with ``iothub.ca_file`` its CA, and ``thingworx.auto_bind`` the
        simulated devices (after any configured ones). Everything else is kept.
        """
        info = self.info
        hub = self.hub
        assert hub is not None
        configured = list(settings.thingworx.auto_bind)
        bind = configured + [d for d in info.devices if d not in configured]
        thingworx = settings.thingworx.model_copy(
            update={
                "url": info.ws_url,
                "app_key": SecretStr(self.app_key),
                "ca_file": "",
                "auto_bind": bind,
            }
        )
        iothub = settings.iothub.model_copy(
            update={
                "connection_string": SecretStr(hub.owner_connection_string),
                "ca_file": str(info.ca_pem),
            }
        )
        return settings.model_copy(update={"thingworx": thingworx, "iothub": iothub})


class EmbeddedRun:
    """The embedded run's root: the two ends, then :class:`~agent.app.AgentApp` on settings
    pointing at them, as one async context manager that gives the app.

    Args:
        settings: the configured settings (``[embedded]`` and everything the agent keeps).
        app_key: the stand-in's application key.

    Raises:
        EmbeddedError: (on entering) an end could not start.
        agent.errors.AgentError: (on entering) what :class:`~agent.app.AgentApp` raises; the ends
            are stopped again.
    """

    def __init__(self, settings: Settings, app_key: str) -> None:
        self._settings = settings
        self.ends = EmbeddedEnds(
            settings.embedded, app_key, request_timeout=settings.thingworx.request_timeout
        )
        self.app: AgentApp | None = None
        self.started = False
        """True once the ends have started (the run has something to stop)."""

    async def __aenter__(self) -> AgentApp:
        await self.ends.start()
        self.started = True
        try:
            app = AgentApp(self.ends.agent_settings(self._settings))
            await app.__aenter__()
        except BaseException:
            await self.ends.stop()
            raise
        self.app = app
        return app

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        app, self.app = self.app, None
        try:
            if app is not None:
                await app.__aexit__(exc_type, exc, tb)
        finally:
            await self.ends.stop()
