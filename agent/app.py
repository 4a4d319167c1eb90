"""The agent assembled: the one composition root of a running agent.

:class:`AgentApp` builds everything from one :class:`~agent.settings.Settings`: the
:class:`~agent.iothub.IotHubClient`, a :class:`~agent.registry.ThingRegistry` holding the gateway
Thing and the ``thingworx.auto_bind`` device Things, each with the six job services and the
wrapper services of ``jobs.wrappers_dir`` (the gateway Thing also with their ``<Name>Rollout``
forms and the rollout services; device Things also with
``AzureIotDeviceGetConnectionState``), the :class:`~agent.channel.AlwaysOnClient` that serves
them, and (``health.enabled``) the :class:`~agent.health.HealthServer` with its
:class:`~agent.health.HubProbe`. ``async with AgentApp(settings) as app`` runs them all in one
:class:`asyncio.TaskGroup`: the channel, the hub probe and the latency sampler, the job watchers
(:class:`~services.watch.JobWatch`, one task reading each active job once per
``jobs.watch_interval`` and pushing its progress through the channel), the audit writer
(:class:`~services.audit.AuditRecorder`: the registry hands it every changing call, it writes
them to the store's audit log), and whatever later
features add; leaving the block drains and stops them (:meth:`AgentApp.stop`), stops the health
server and closes the IoT Hub client.

``jobs-agent check`` is the same app with ``bind=False`` (authenticate only, next to a running
agent) and no health server; the embedded run (:mod:`agent.embedded`) starts its two emulators
and then this same app.

Rules:
- Everything that can be wrong in the configuration (the IoT Hub connection string, a wrapper
  declaration, a Thing name, the ThingWorx URL) fails in the constructor, before any connection
  is opened or any port is bound.
- Every wait has a deadline: :meth:`AgentApp.wait_ready` takes one (by default the settings'
  budget for one connection attempt), :meth:`AgentApp.until_ready` waits in such bounded steps
  until ready or told to stop, and the TaskGroup cancels the block when a task it owns fails.
- A task that fails (the channel refusing its configuration) ends the block: the TaskGroup
  cancels it and ``async with`` raises an :class:`ExceptionGroup` holding the failure.
- The agent never starts the bundled emulators itself: that is :mod:`agent.embedded`'s job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import structlog
from structlog.typing import FilteringBoundLogger

from agent.alwayson.rowcodec import ACCELERATOR
from agent.channel import AlwaysOnClient
from agent.health import HealthServer, HealthUnavailable, HubProbe
from agent.iothub import IotHubClient
from agent.registry import ThingRegistry
from agent.settings import Settings
from rollouts import HubTier
from services import JobServices
from services.audit import AuditRecorder, AuditServices
from services.device import connection_state_service
from services.rollout_engine import RolloutEngine
from services.rollout_events import RolloutEvents, rollout_events
from services.rollouts import RolloutServices
from services.store import open_store
from services.store.admission import Admission, LocalAdmission, PostgresAdmission
from services.store.audit import open_audit_log
from services.store.leadership import Leadership, LocalLeadership, PostgresLeadership
from services.watch import (
    JobWatch,
    device_events,
    device_properties,
    gateway_events,
    gateway_properties,
)
from wrappers import (
    WrapperDeclaration,
    load_wrappers,
    wrapper_rollout_service,
    wrapper_service,
)

__all__ = ["AgentApp"]

_log = structlog.get_logger("agent.app")


class AgentApp:
    """The running agent, as an async context manager.

    Args:
        settings: the agent's settings, with both ends configured.
        bind: False to authenticate only and bind no Thing (``jobs-agent check`` next to a
            running agent).
        health: serve ``/healthz`` and ``/metrics`` and probe the hub; None (the default)
            follows ``health.enabled``.
        wrappers: the wrapper declarations, when the caller loaded them already; None loads
            ``jobs.wrappers_dir``.
        channel_logger: the channel's logger (``check`` passes a silent one), None for the
            default.
        rollouts: False to run neither the rollout engine nor its leadership (``jobs-agent
            check``: it must never drive rollouts nor take the leadership from the agent).

    Raises:
        agent.iothub.IotHubError: the IoT Hub connection string is missing or malformed.
        wrappers.WrapperConfigError: a wrapper declaration is wrong (names file, entry, problem).
        agent.registry.RegistryError: a Thing name the registry refuses.
        agent.channel.ChannelConfigError: the ThingWorx URL is not ws:// or wss://.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        bind: bool = True,
        health: bool | None = None,
        wrappers: Sequence[WrapperDeclaration] | None = None,
        channel_logger: FilteringBoundLogger | None = None,
        rollouts: bool = True,
    ) -> None:
        self.settings = settings
        self._run_rollouts = rollouts
        self.wrappers: list[WrapperDeclaration] = (
            load_wrappers(Path(settings.jobs.wrappers_dir)) if wrappers is None else list(wrappers)
        )
        self.client = IotHubClient(settings.iothub, settings.jobs)
        # A FindJobs/QueryJobResults page reads at most half a message of hub JSON (plus one hub
        # page), so its answer fits one AlwaysOn message with room to spare.
        self.jobs = JobServices(
            self.client,
            settings.jobs,
            page_bytes=settings.thingworx.max_message_size // 2,
            request_timeout=settings.thingworx.request_timeout,
            gateway_thing=settings.thingworx.gateway_thing,
        )
        self.registry = ThingRegistry(settings.jobs)
        hub = settings.iothub
        self.rollout_store = open_store(settings)
        tier = HubTier(hub.tier, hub.tier_units)
        self.leadership, self.admission = self._sharing(
            hub.max_concurrent_jobs or tier.max_concurrent_jobs
        )
        self.rollouts = RolloutEngine(
            self.client,
            self.rollout_store,
            settings.jobs,
            tier=tier,
            max_concurrent_jobs=hub.max_concurrent_jobs,
            poll_interval=settings.rollouts.poll_interval,
            leadership=self.leadership,
            admission=self.admission,
        )
        self.leadership.on_change = self.rollouts.wake
        self.rollout_services = RolloutServices(self.rollouts, settings.jobs)
        gateway = settings.thingworx.gateway_thing
        # The audit log: every changing call the registry serves, kept in the store.
        self.audit_log = open_audit_log(
            settings.store.url.get_secret_value(),
            settings.rollouts.data_dir,
            connect_timeout=settings.audit.store_timeout,
        )
        self.audit = AuditRecorder(
            self.audit_log, settings.audit, agent=f"{socket.gethostname()}/{gateway}"
        )
        self.registry.recorder = self.audit
        self.audit_services = AuditServices(
            self.audit, settings.jobs, page_bytes=settings.thingworx.max_message_size // 2
        )
        self._add_thing(gateway, gateway=True)
        for device in settings.thingworx.auto_bind:
            if device != gateway:
                self._add_thing(device, gateway=False)
        self.channel = AlwaysOnClient(
            settings.thingworx, self.registry, logger=channel_logger, bind=bind
        )
        devices = {t for t in self.registry.things() if t != gateway}
        self.watch = JobWatch(self.client, settings.jobs, self.channel, gateway, lambda: devices)
        self.rollouts.listener = RolloutEvents(self.channel, gateway)
        self.jobs.watch = self.watch
        self.health: HealthServer | None = None
        if settings.health.enabled if health is None else health:
            client = self.client
            self.health = HealthServer(
                settings.health,
                self.channel,
                settings.thingworx.url,
                HubProbe.for_client(client, interval=settings.health.probe_interval),
                load=lambda: client.load,
                leadership=self.leadership,
                store="postgresql" if settings.store.shared else "sqlite",
            )
        self._group: asyncio.TaskGroup | None = None
        self._channel_task: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []

    def _sharing(self, slots: int) -> tuple[Leadership, Admission]:
        """The rollout leadership and the admission slots: shared through ``store.url``'s
        PostgreSQL database, or this agent's own (SQLite: always the leader)."""
        store = self.settings.store
        if not store.shared:
            return LocalLeadership(), LocalAdmission()
        url = store.url.get_secret_value()
        host = self.client.host
        agent = f"{socket.gethostname()}:{os.getpid()}"
        return (
            PostgresLeadership(url, host, store.takeover_seconds, agent=agent),
            PostgresAdmission(url, host, slots, agent=agent),
        )

    def _add_thing(self, thing: str, *, gateway: bool) -> None:
        self.registry.add_thing(thing)
        for service in self.jobs.declare(thing, gateway=gateway):
            self.registry.add_service(thing, service)
        if gateway:
            for service in self.rollout_services.declare():
                self.registry.add_service(thing, service)
            self.registry.add_service(thing, self.audit_services.declare())
        else:
            self.registry.add_service(thing, connection_state_service(self.client, thing))
        for prop in gateway_properties() if gateway else device_properties():
            self.registry.add_property(thing, prop)
        for event in [*gateway_events(), *rollout_events()] if gateway else device_events():
            self.registry.add_event(thing, event)
        for declaration in self.wrappers:
            self.registry.add_service(
                thing,
                wrapper_service(declaration, self.jobs, self.settings.jobs, thing, gateway=gateway),
            )
            if gateway:
                self.registry.add_service(
                    thing, wrapper_rollout_service(declaration, self.jobs, self.rollout_services)
                )

    @property
    def ready_budget(self) -> float:
        """Seconds one connection attempt may take: ``connect_timeout + 2 * auth_timeout`` (the
        connect, the AUTH and the BINDs)."""
        twx = self.settings.thingworx
        return twx.connect_timeout + 2 * twx.auth_timeout

    @property
    def stop_budget(self) -> float:
        """Seconds :meth:`stop` may take before the channel is cancelled: the drain, the UNBIND
        and the close handshake (``drain_timeout + auth_timeout + 2 * connect_timeout``)."""
        twx = self.settings.thingworx
        return twx.drain_timeout + twx.auth_timeout + 2 * twx.connect_timeout

    async def __aenter__(self) -> AgentApp:
        """Listen for health checks (when enabled), then start the channel, the hub probe and
        the latency sampler in the app's TaskGroup.

        Raises:
            agent.health.HealthUnavailable: the health endpoint cannot listen (nothing is left
                running).
        """
        if self._group is not None:
            raise RuntimeError("this AgentApp is running already")
        _log.info(
            "agent starting",
            hub=self.client.host,
            things=len(self.registry.things()),
            wrappers=[w.name for w in self.wrappers],
            row_reader=ACCELERATOR,
        )
        if self.health is not None:
            try:
                await self.health.listen()
            except OSError as exc:
                await self.client.close()
                health = self.settings.health
                raise HealthUnavailable(
                    f"the health endpoint cannot listen on {health.host}:{health.port}: {exc}; "
                    "set JOBS_AGENT_HEALTH__PORT (or JOBS_AGENT_HEALTH__ENABLED=false)"
                ) from exc
            except BaseException:
                await self.client.close()
                raise
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group
        self._channel_task = group.create_task(self.channel.run(), name="channel")
        self._background = [
            group.create_task(self.watch.run(), name="job-watch"),
            group.create_task(self.audit.run(), name="audit"),
        ]
        if self._run_rollouts:
            self._background += [
                group.create_task(self.rollouts.run(), name="rollouts"),
                group.create_task(self.leadership.run(), name="rollout-leadership"),
            ]
        if self.health is not None:
            self._background.append(group.create_task(self.health.run(), name="health"))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop (drain, UNBIND, close), end the background tasks, stop the health server and
        close the IoT Hub client; re-raise what failed in the TaskGroup."""
        group, self._group = self._group, None
        assert group is not None
        try:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.stop_budget):
                    await self.stop()
            channel = self._channel_task
            if channel is not None and not channel.done():
                channel.cancel()
            with contextlib.suppress(Exception):
                await self.audit.flush(self.settings.audit.store_timeout)
            for task in self._background:
                task.cancel()
            await group.__aexit__(exc_type, exc, tb)
        finally:
            self._background, self._channel_task = [], None
            if self.health is not None:
                await self.health.stop()
            await self.client.close()
            await self.leadership.close()
            await self.admission.close()
            self.rollouts.store.close()
            self.audit.abandon()
            self.audit_log.close()
            _log.info("agent stopped")

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the channel is connected and the Things are bound.

        Args:
            timeout: seconds; None for :attr:`ready_budget`.

        Raises:
            agent.channel.ChannelNotReady: not ready within ``timeout`` seconds.
        """
        await self.channel.wait_ready(self.ready_budget if timeout is None else timeout)

    async def until_ready(self, stop: asyncio.Event) -> bool:
        """Wait until the channel is READY or ``stop`` is set, however long the channel takes
        to connect (it keeps retrying): each wait is bounded by :attr:`ready_budget` and races
        ``stop``.

        Returns:
            True when ready, False when ``stop`` was set first.
        """
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while True:
                ready = asyncio.ensure_future(self.channel.wait_ready(self.ready_budget))
                try:
                    await asyncio.wait({ready, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not ready.done():
                        ready.cancel()
                    await asyncio.gather(ready, return_exceptions=True)
                if stopper.done():
                    return False
                if not ready.cancelled() and ready.exception() is None:
                    return True
        finally:
            stopper.cancel()
            await asyncio.gather(stopper, return_exceptions=True)

    async def stop(self) -> None:
        """Refuse new calls, let those in flight finish and answer (up to
        ``thingworx.drain_timeout``), unbind and close the channel; the IoT Hub client stays open
        until the ``async with`` block ends, so the drained calls can finish."""
        await self.channel.stop()
        channel = self._channel_task
        if channel is not None:
            # The channel's run ends once stopped; give it the close handshake's time, no more.
            await asyncio.wait({channel}, timeout=2 * self.settings.thingworx.connect_timeout)
