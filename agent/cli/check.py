"""``jobs-agent check``: validate the configuration and reach both ends, step by step.

Rules:
- ``check`` runs the same :class:`~agent.app.AgentApp` as ``run``, without its health server and
  binding only the gateway Thing, or nothing (``bind=False``) when an agent for the same
  ThingWorx already runs here.
- The store (:mod:`agent.cli.check_store`) is checked read only after the two ends, whatever
  they answered.
- Each failure is one line with what to fix (:mod:`agent.cli.hints`); exit status 0 all good, 1
  an end failed, 2 the configuration is wrong.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from rich.console import Console

from agent.app import AgentApp
from agent.cli.args import APP_KEY_ENV, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from agent.cli.check_store import check_store
from agent.cli.hints import hint_for, hub_hint
from agent.cli.run import configuration_problems
from agent.errors import AgentError
from agent.iothub import IotHubError
from agent.settings import Settings
from wrappers import WrapperConfigError, load_wrappers

__all__ = ["check"]


async def _running_agent(settings: Settings) -> tuple[str, dict[str, Any]] | None:
    """The ``/healthz`` URL and document of an agent running here for the same ThingWorx URL
    (found on the configured health port), or None."""
    health = settings.health
    if not health.enabled or health.port == 0:
        return None
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(health.host, health.host)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{health.port}/healthz"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as http,
            http.get(url) as reply,
        ):
            doc = await reply.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError, OSError):
        return None
    thingworx = doc.get("thingworx") if isinstance(doc, dict) else None
    if isinstance(thingworx, dict) and thingworx.get("url") == settings.thingworx.url:
        return url, doc
    return None


async def check(settings: Settings, console: Console, *, force_bind: bool = False) -> int:
    """``jobs-agent check``: validate the configuration and reach both ends, step by step.

    Then the store, read only, whatever the ends answered (:mod:`agent.cli.check_store`).
    ThingWorx is checked by AUTH, then BIND and UNBIND of the gateway Thing. When an agent for
    the same ThingWorx already runs here (its ``/healthz`` answers on the configured health
    port), the BIND is not tried unless ``force_bind``: on a last-in-wins server it would take
    the gateway Thing from that agent, and the UNBIND would leave it unbound. The running
    agent's own state is reported instead. A BIND refused because another agent holds the Thing
    (first-in-wins, an agent not seen here) passes: this agent would be its standby.

    Returns:
        The exit status: 0 all good, 1 an end failed, 2 the configuration is wrong.
    """
    ok, bad = "[green]✓[/green]", "[red]✗[/red]"

    def fail(step: str, message: str, hint: str) -> None:
        console.print(f"{bad} {step}: ", end="")
        console.print(message, markup=False, end="")
        console.print(f"\n  → {hint}", markup=False)

    console.print(f"{ok} configuration loaded")
    if settings.embedded_mode:
        e = settings.embedded
        host = e.host
        where = f"listening on {e.bind_host}, named {host}" if e.bind_host else "on loopback"
        console.print(
            "embedded mode (no thingworx.url, no iothub.connection_string): `jobs-agent run` "
            f"would start, {where}:",
            markup=False,
        )
        console.print(
            f"  the IoT Hub emulator: HTTPS {host}:{e.iothub_rest_port}, MQTT/TLS {host}:8883, "
            f"{e.devices} simulated devices ({e.offline_share:.0%} offline), state in "
            f"{e.data_dir}/",
            markup=False,
        )
        console.print(
            f"  the ThingWorx stand-in: http://{host}:{e.thingworx_port} (web console, REST, "
            f"AlwaysOn at /Thingworx/WS), app key from ${APP_KEY_ENV} or generated",
            markup=False,
        )
        console.print(
            f"  the agent, binding {settings.thingworx.gateway_thing} and {e.devices} device "
            "Things",
            markup=False,
        )
        if settings.health.enabled:
            console.print(
                f"  /healthz and /metrics on http://{settings.health.host}:{settings.health.port}",
                markup=False,
            )
        return EXIT_OK
    problems = configuration_problems(settings)
    if problems:
        for problem in problems:
            fail("configuration", problem.split(":")[0], problem.split(": ", 1)[-1])
        return EXIT_USAGE
    try:
        wrappers = load_wrappers(Path(settings.jobs.wrappers_dir))
    except WrapperConfigError as exc:
        fail("wrappers", str(exc), f"fix the declarations in {settings.jobs.wrappers_dir}")
        return EXIT_USAGE
    console.print(
        f"{ok} wrappers: {len(wrappers)} from {settings.jobs.wrappers_dir}", highlight=False
    )
    # The same app as `run`, authenticating and binding the gateway Thing only (or nothing, next
    # to a running agent), with no health server and no retries on the hub's read.
    twx = settings.thingworx
    check_settings = settings.model_copy(
        update={
            "iothub": settings.iothub.model_copy(update={"read_retries": 0}),
            "thingworx": twx.model_copy(update={"auto_bind": []}),
        }
    )
    # check prints each failure itself: the channel's own log lines would say it twice.
    quiet = (
        None
        if settings.log.level == "DEBUG"
        else structlog.wrap_logger(
            None, wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL)
        )
    )
    running = None if force_bind else await _running_agent(settings)
    try:
        app = AgentApp(
            check_settings,
            bind=running is None,
            health=False,
            wrappers=wrappers,
            channel_logger=quiet,
            rollouts=False,  # never drive rollouts nor take a shared store's leadership
        )
    except IotHubError as exc:
        fail("iothub.connection_string", str(exc), "use the hub's service connection string")
        return EXIT_USAGE
    except AgentError as exc:
        fail("thingworx.url", str(exc), "use wss://<host>/Thingworx/WS")
        return EXIT_USAGE
    try:
        async with app:
            status = await _check_ends(app, console, running, fail)
    except ExceptionGroup as group:
        # The channel refused its configuration (an empty app key): the app's TaskGroup ended.
        failure = group.exceptions[0]
        fail(f"ThingWorx {twx.url}", str(failure), "fix the [thingworx] settings")
        return EXIT_FAILED
    # The store is checked whatever the ends said: it does not depend on them.
    store_status = await check_store(settings, app.client.host, console, fail)
    status = max(status, store_status)
    if status != EXIT_OK:
        return status
    console.print("all checks passed")
    return EXIT_OK


async def _check_ends(
    app: AgentApp,
    console: Console,
    running: tuple[str, dict[str, Any]] | None,
    fail: Callable[[str, str, str], None],
) -> int:
    """ThingWorx (AUTH, BIND and UNBIND of the gateway Thing, or AUTH only next to a running
    agent), then the hub (one read), on the running ``app``."""
    ok = "[green]✓[/green]"
    twx = app.settings.thingworx
    channel = app.channel
    budget = app.ready_budget
    ready = asyncio.ensure_future(app.wait_ready(budget))
    failed = asyncio.ensure_future(channel.wait_error(budget))
    try:
        await asyncio.wait({ready, failed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ready_ok = ready.done() and not ready.cancelled() and ready.exception() is None
        failed.cancel()
        ready.cancel()
        await app.stop()
        await asyncio.gather(failed, ready, return_exceptions=True)
    failure = channel.last_failure
    standby = not ready_ok and failure is not None and failure.kind == "standby"
    if not ready_ok and not standby:
        error = channel.last_error
        if error is not None:
            fail(f"ThingWorx {twx.url}", error, hint_for(channel.last_failure))
        else:
            fail(
                f"ThingWorx {twx.url}",
                f"not ready within {budget:g} s",
                "check the URL and the network (thingworx.connect_timeout, auth_timeout)",
            )
        return EXIT_FAILED
    if standby and failure is not None:
        # First-in-wins (the platform's default): another agent, not found through a /healthz
        # here (another machine), holds the Things. ThingWorx is reachable and the key works;
        # an agent started with this configuration would wait as that agent's standby.
        console.print(
            f"{ok} ThingWorx {twx.url}: authenticated; BIND of {twx.gateway_thing} refused: "
            f"another agent holds it ({failure.detail.removeprefix('standby: ')}); an agent "
            "started here would wait as its standby",
            highlight=False,
        )
    elif running is None:
        console.print(
            f"{ok} ThingWorx {twx.url}: authenticated, bound and unbound {twx.gateway_thing}",
            highlight=False,
        )
    else:
        health_url, doc = running
        state = doc["thingworx"]
        console.print(
            f"{ok} ThingWorx {twx.url}: authenticated; BIND not tried: the agent running here "
            f"({health_url}) is {state.get('state')} with {state.get('boundThings')} Things "
            f"bound, and binding {twx.gateway_thing} would take it from that agent "
            "(use --bind to try anyway)",
            highlight=False,
        )
        if not state.get("ready"):
            console.print(
                f"  ! the running agent is not ready: {state.get('lastError') or 'no reason'}",
                markup=False,
            )

    # IoT Hub: one read (list at most one job).
    try:
        jobs = await app.client.list_jobs(max_jobs=1)
    except IotHubError as exc:
        fail(f"IoT Hub {app.client.host}", str(exc), hub_hint(exc))
        return EXIT_FAILED
    console.print(
        f"{ok} IoT Hub {app.client.host}: reachable, credentials accepted "
        f"({len(jobs)} job{'s' if len(jobs) != 1 else ''} listed)",
        highlight=False,
    )
    return EXIT_OK
