"""``jobs-agent run``: the run's lifecycle around :class:`~agent.app.AgentApp`: signals, drain,
banner.

With nothing configured, the embedded run (:class:`~agent.embedded.EmbeddedRun`: the bundled IoT
Hub emulator and ThingWorx stand-in, then the same AgentApp); else the agent alone.

Rules:
- ``run`` stops cleanly on SIGINT and SIGTERM: the agent takes no new calls, lets those in flight
  finish and answers them (up to ``thingworx.drain_timeout``), UNBINDs and closes, then the
  health server stops, then (embedded) the stand-in, the fleet and the emulator; nothing is left
  running. Exit status 0 after a signal.
- Exit status 2 for a configuration the agent refuses (also a :class:`ChannelError` that stops
  it), 1 for anything else that stops it (a port taken, an end that cannot start).
- The embedded run's settings are passed as objects; the process environment is never written.
- The banner is printed by one function, :func:`_banner`, once the agent is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from rich.console import Console

from agent.app import AgentApp
from agent.channel import ChannelError
from agent.cli.args import APP_KEY_ENV, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from agent.embedded import EmbeddedError, EmbeddedInfo, EmbeddedRun, new_app_key
from agent.errors import AgentError
from agent.health import HealthUnavailable
from agent.settings import Settings
from services import SCHEDULE_METHOD_JOB, SCHEDULE_TWIN_JOB

__all__ = ["KEY_GENERATED", "configuration_problems", "embedded_app_key", "run"]

KEY_GENERATED = "generated"
"""The source :func:`embedded_app_key` gives a key it made itself (the only one printed)."""


def _install_stop(stop: asyncio.Event) -> Callable[[], None]:
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)

    def remove() -> None:
        for sig in signals:
            loop.remove_signal_handler(sig)

    return remove


def configuration_problems(settings: Settings) -> list[str]:
    """What is missing for a run against real ends (empty in embedded mode)."""
    if settings.embedded_mode:
        return []
    problems = []
    if not settings.thingworx.url:
        problems.append(
            "thingworx.url is not set: set JOBS_AGENT_THINGWORX__URL to "
            "wss://<host>/Thingworx/WS (or unset the hub connection string for the embedded run)"
        )
    if not settings.thingworx.app_key.get_secret_value():
        problems.append(
            "thingworx.app_key is not set: set JOBS_AGENT_THINGWORX__APP_KEY or "
            "thingworx.app_key_file"
        )
    if not settings.iothub.connection_string.get_secret_value():
        problems.append(
            "iothub.connection_string is not set: set JOBS_AGENT_IOTHUB__CONNECTION_STRING or "
            "iothub.connection_string_file (or unset thingworx.url for the embedded run)"
        )
    return problems


def _first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf exception of a TaskGroup's failure."""
    first = group.exceptions[0]
    return _first_failure(first) if isinstance(first, BaseExceptionGroup) else first


async def _serve(
    open_app: Callable[[], AbstractAsyncContextManager[AgentApp]],
    stop: asyncio.Event,
    on_ready: Callable[[AgentApp], Awaitable[None]],
    err: Console,
) -> int:
    """Run the app ``open_app`` gives until ``stop`` is set; ``on_ready`` once it is ready.

    Returns:
        The exit status.
    """
    try:
        async with open_app() as app:
            if await app.until_ready(stop):
                await on_ready(app)
                await stop.wait()
        return EXIT_OK
    except (EmbeddedError, HealthUnavailable) as exc:
        err.print(f"jobs-agent: {exc}", markup=False)
        return EXIT_FAILED
    except AgentError as exc:
        # Raised by the constructor: IotHubError, WrapperConfigError, RegistryError,
        # ChannelConfigError (a failure while running comes as an ExceptionGroup).
        err.print(f"jobs-agent: configuration error: {exc}", markup=False)
        return EXIT_USAGE
    except ExceptionGroup as group:
        failure = _first_failure(group)
        err.print(f"jobs-agent: the agent stopped: {failure}", markup=False)
        return EXIT_USAGE if isinstance(failure, ChannelError) else EXIT_FAILED


def _banner(
    console: Console,
    info: EmbeddedInfo,
    settings: Settings,
    app_key: str,
    key_source: str,
    health_url: str | None,
) -> None:
    """The embedded run's banner. The app key is printed only when this run generated it (there
    is nowhere else to learn it); a key the user gave (``$THINGWORX_APP_KEY`` or
    ``thingworx.app_key``) is named, not shown, and the examples read it from the environment.
    """
    gateway = settings.thingworx.gateway_thing
    devices = list(info.devices)
    out = console.print
    out("[bold]jobs-agent: embedded run[/bold] (nothing configured: bundled ends on loopback)")
    out(f"  ThingWorx stand-in  {info.thingworx_url}  (web console; REST under /Thingworx)")
    if key_source == KEY_GENERATED:
        out(
            f"  app key             {app_key}  (generated; set ${APP_KEY_ENV} to choose it)",
            markup=False,
        )
        header = f"'appKey: {app_key}'"
        call_prefix = f"{APP_KEY_ENV}={shlex.quote(app_key)} "
    else:
        hint = "" if key_source == f"${APP_KEY_ENV}" else f"; export {APP_KEY_ENV} for the examples"
        out(f"  app key             from {key_source} (not shown{hint})", markup=False)
        header = f'"appKey: ${APP_KEY_ENV}"'
        call_prefix = ""
    out(
        f"  IoT Hub emulator    {info.hub_rest_url}, MQTT {info.mqtt_address}; "
        f"{len(devices)} devices, {len(info.offline)} offline; data in {info.hub_file.parent}"
    )
    first_last = f" ({devices[0]} .. {devices[-1]})" if devices else ""
    out(f"  Things              {gateway} + {len(devices)} device Things{first_last}")
    if health_url:
        out(f"  health, metrics     {health_url}/healthz  {health_url}/metrics")
    sample = devices[0] if devices else gateway
    base = f"{info.rest_url}/Things"
    patch = json.dumps({"patch": {"properties": {"desired": {"telemetryInterval": 30}}}})
    job = json.dumps({"methodName": "reboot", "queryCondition": 'deviceId IN ["device-0001"]'})
    out("")
    out("Try (a twin update on one device Thing, then a method job from the gateway Thing):")
    for thing, service, body in (
        (sample, SCHEDULE_TWIN_JOB, patch),
        (gateway, SCHEDULE_METHOD_JOB, job),
    ):
        out(
            f"  curl -s -X POST -H {header} -H 'Content-Type: application/json' "
            f"-d {shlex.quote(body)} {base}/{thing}/Services/{service}",
            markup=False,
            soft_wrap=True,
        )
    out(
        f"  {call_prefix}{_jobs_agent_command()} call "
        f"{SCHEDULE_METHOD_JOB} methodName=reboot "
        "\"queryCondition=deviceId IN ['device-0001','device-0002']\" --wait",
        markup=False,
        soft_wrap=True,
    )
    if _jobs_agent_command() != "jobs-agent":
        out(
            f"  (jobs-agent is in {Path(sys.prefix) / 'bin'}: run it by that path, or "
            f"`source {Path(sys.prefix) / 'bin' / 'activate'}` first)",
            markup=False,
            soft_wrap=True,
        )


def _jobs_agent_command() -> str:
    """How this shell reaches ``jobs-agent``: the bare name when it is on PATH (an activated
    virtualenv, a pip install), else its path in the virtualenv (``make run``)."""
    here = Path(sys.prefix) / "bin" / "jobs-agent"
    found = shutil.which("jobs-agent")
    if found is not None and Path(found).resolve() == here.resolve():
        return "jobs-agent"
    if here.exists():
        with contextlib.suppress(ValueError):
            return str(here.relative_to(Path.cwd()))
        return str(here)
    return "jobs-agent"


def embedded_app_key(settings: Settings) -> tuple[str, str]:
    """The stand-in's app key for an embedded run and where it came from: ``$THINGWORX_APP_KEY``,
    else ``thingworx.app_key``, else a new one (source :data:`KEY_GENERATED`)."""
    if os.environ.get(APP_KEY_ENV):
        return os.environ[APP_KEY_ENV], f"${APP_KEY_ENV}"
    configured = settings.thingworx.app_key.get_secret_value()
    if configured:
        return configured, "thingworx.app_key"
    return new_app_key(), KEY_GENERATED


async def _run_embedded(settings: Settings, console: Console, err: Console) -> int:
    stop = asyncio.Event()
    remove = _install_stop(stop)
    try:
        app_key, key_source = embedded_app_key(settings)
        embedded = EmbeddedRun(settings, app_key)

        async def on_ready(app: AgentApp) -> None:
            # The banner comes after the start-up logging: once the stand-in has learned the
            # services of every bound Thing (the last start-up step that logs), with the log
            # stream flushed, and written in one piece (nothing interleaves).
            ends = embedded.ends
            standin = ends.standin
            if standin is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(settings.thingworx.auth_timeout):
                        await asyncio.gather(
                            *(
                                standin.wait_metadata(thing, settings.thingworx.auth_timeout)
                                for thing in app.registry.things()
                            )
                        )
            info = ends.info
            health_url = app.health.url if app.health is not None else None
            sys.stderr.flush()
            with console:  # rich buffers everything printed inside, then writes it once
                _banner(console, info, settings, app_key, key_source, health_url)
                console.print(f"ready: open {info.thingworx_url} (Ctrl-C to stop)")
            console.file.flush()

        status = await _serve(lambda: embedded, stop, on_ready, err)
        if embedded.started:
            console.print("stopped")
            console.file.flush()
        return status
    finally:
        remove()


async def _run_real(settings: Settings, console: Console, err: Console) -> int:
    problems = configuration_problems(settings)
    if problems:
        for problem in problems:
            err.print(f"jobs-agent: configuration error: {problem}", markup=False)
        return EXIT_USAGE
    stop = asyncio.Event()
    remove = _install_stop(stop)
    try:

        async def on_ready(app: AgentApp) -> None:
            where = f"; health at {app.health.url}/healthz" if app.health is not None else ""
            console.print(
                f"ready: connected to {settings.thingworx.url}, hub {app.client.host}{where}",
                markup=False,
            )
            console.file.flush()

        return await _serve(lambda: AgentApp(settings), stop, on_ready, err)
    finally:
        remove()


async def run(settings: Settings, console: Console | None = None) -> int:
    """``jobs-agent run``: the embedded run when nothing is configured, else the agent alone.

    Returns:
        The exit status (0 after SIGINT/SIGTERM).
    """
    console = console or Console(soft_wrap=True)
    err = Console(stderr=True, soft_wrap=True)
    if settings.embedded_mode:
        return await _run_embedded(settings, console, err)
    return await _run_real(settings, console, err)
