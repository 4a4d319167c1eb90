"""The ``jobs-agent`` command line.

Sub-commands: ``run`` (the agent; with nothing configured, the embedded run against the bundled
IoT Hub emulator and ThingWorx stand-in), ``check`` (validate the configuration and reach both
ends), ``call`` (call a service through ThingWorx's REST convention). Logging is configured here,
once.

Rules:
- Exit status: 0 success (and a run stopped by SIGINT/SIGTERM), 1 a failure at run time (an end
  refused or unreachable, a call answered with an error; with ``--wait``, a job that failed or
  was cancelled), 2 a configuration or usage error; ``call --wait`` only: 3 the job completed but
  some devices failed, 4 the wait ended before the job did, 130 Ctrl-C stopped the watching (the
  job goes on on the hub).
- Tables never cut an id (``jobId``, ``deviceId``): other columns fold first.
- Human output (the embedded banner, check's steps, call's tables) goes to stdout through rich;
  logs go to stderr through structlog; errors are one line saying what to fix.
- ``run`` stops cleanly on SIGINT and SIGTERM: the agent takes no new calls, lets those in flight
  finish and answers them (up to ``thingworx.drain_timeout``), UNBINDs and closes, then the
  health server stops, then (embedded) the stand-in, the fleet and the emulator; nothing is left
  running.
- The embedded run's settings are passed as objects; the process environment is never written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agent.logsetup import configure_logging
from agent.settings import Settings, load_settings, settings_errors

__all__ = [
    "KEY_GENERATED",
    "CallError",
    "WaitTimeout",
    "call",
    "call_service",
    "check",
    "embedded_app_key",
    "infotable_table",
    "main",
    "parse_inputs",
    "rest_root",
    "run",
]

APP_KEY_ENV = "THINGWORX_APP_KEY"
KEY_GENERATED = "generated"
"""The source :func:`embedded_app_key` gives a key it made itself (the only one printed)."""
_TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
_PIPED_WIDTH = 160
_WAIT_SLACK = 120.0  # seconds --wait allows beyond the job's own window by default
_ID_COLUMNS = frozenset({"jobId", "deviceId", "name", "field"})

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DEVICES_FAILED = 3
EXIT_WAIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130

_DESCRIPTION = """\
The edge agent that runs Azure IoT Hub device jobs as ThingWorx remote services.

With nothing configured, `jobs-agent run` starts the embedded run: a bundled IoT Hub emulator
with a simulated fleet, a ThingWorx stand-in with a web console, and the agent between them.
`jobs-agent call` calls a service through ThingWorx's REST convention (the embedded stand-in
by default); `jobs-agent check` validates a configuration and reaches both ends."""

_EXAMPLES = """\
examples:
  jobs-agent run
  jobs-agent check --config config/agent.toml
  jobs-agent call AzureIotDeviceJobFindJobs status=completed
  jobs-agent call AzureIotDeviceJobScheduleDeviceMethodJob methodName=reboot \\
      "queryCondition=deviceId IN ['device-0001','device-0002']" --wait
  jobs-agent call AzureIotDeviceJobGetJob jobId=j1 --output json | jq '.rows[0].summary'

exit status of call --wait: 0 every device succeeded, 1 the call or the job failed,
  2 usage or configuration error, 3 completed but some devices failed,
  4 gave up waiting (the job goes on), 130 stopped by Ctrl-C (the job goes on)"""


class CallError(Exception):
    """A ``call`` that failed: the stand-in's (or ThingWorx's) one-line message."""


class WaitTimeout(CallError):
    """``call --wait`` gave up before the job ended (the job goes on on the hub)."""


# --- argument parsing --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobs-agent",
        description=_DESCRIPTION,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, default=None, help="TOML configuration file")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the agent (embedded emulators when nothing is configured)")
    check = sub.add_parser("check", help="validate the configuration and reach both ends")
    check.add_argument(
        "--bind",
        action="store_true",
        help="try the BIND even when an agent for the same ThingWorx runs here (it takes the "
        "gateway Thing from that agent: ThingWorx keeps the last bind)",
    )
    call = sub.add_parser(
        "call",
        help="call a service through ThingWorx's REST convention",
        description="Call SERVICE on a Thing: POST {url}/Thingworx/Things/{thing}/Services/"
        "{service} with the inputs as JSON (values parsed as JSON when they parse, else strings).",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    call.add_argument("service", help="service name, e.g. AzureIotDeviceJobFindJobs")
    call.add_argument("inputs", nargs="*", metavar="name=value", help="service inputs")
    call.add_argument("--thing", default=None, help="Thing name (default: the gateway Thing)")
    call.add_argument(
        "--url", default=None, help="ThingWorx base URL (default: the embedded stand-in)"
    )
    call.add_argument("--app-key", default=None, help=f"application key (default: ${APP_KEY_ENV})")
    call.add_argument(
        "--wait", action="store_true", help="follow a scheduled job to its end, then its results"
    )
    call.add_argument(
        "--timeout", type=float, default=None, help="--wait deadline, s (default: job window+120)"
    )
    call.add_argument("--poll-interval", type=float, default=1.0, help="--wait GetJob period, s")
    call.add_argument(
        "--output",
        choices=("table", "json"),
        default="table",
        help="table (default) or json: the InfoTable JSON for scripts (with --wait, one object "
        '{"job": ..., "results": ...} and no progress bar)',
    )
    return parser


def parse_inputs(pairs: Sequence[str]) -> dict[str, Any]:
    """Turn ``name=value`` arguments into a JSON object of service inputs.

    A value is parsed as JSON when it parses (``5`` → 5, ``true`` → True, ``{"a":1}`` → a dict,
    ``"5"`` → the string 5), else kept as the string given (``reboot``, ``deviceId='d1'``).
    Only the first ``=`` splits, so values may contain ``=``.

    Raises:
        ValueError: an argument without ``=``, an empty name, or a name given twice.
    """
    inputs: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"input {pair!r} must be name=value")
        if name in inputs:
            raise ValueError(f"input {name!r} is given twice")
        try:
            inputs[name] = json.loads(text)
        except ValueError:
            inputs[name] = text
    return inputs


def rest_root(url: str) -> str:
    """The REST convention's root (``.../Thingworx``) of a ThingWorx base URL.

    ``http://host:8080``, ``http://host:8080/`` and ``http://host:8080/Thingworx`` all give
    ``http://host:8080/Thingworx``.

    Raises:
        ValueError: not an http:// or https:// URL.
    """
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--url {url!r} must start with http:// or https://")
    return url if url.endswith("/Thingworx") else url + "/Thingworx"


def _app_key_for(settings: Settings, given: str | None = None) -> str:
    """--app-key, else $THINGWORX_APP_KEY, else thingworx.app_key (may be empty)."""
    return given or os.environ.get(APP_KEY_ENV) or settings.thingworx.app_key.get_secret_value()


# --- InfoTables as rich tables ------------------------------------------------------------------


def _fields(doc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(name, baseType)`` of an InfoTable's fields, in ordinal order."""
    defs = (doc.get("dataShape") or {}).get("fieldDefinitions") or {}
    items = list(defs.values()) if isinstance(defs, dict) else list(defs)
    if items and all(isinstance(d, dict) and "ordinal" in d for d in items):
        items.sort(key=lambda d: d["ordinal"])
    fields = [(str(d.get("name", "")), str(d.get("baseType", ""))) for d in items]
    if not fields:
        names: dict[str, None] = {}
        for row in doc.get("rows") or []:
            names.update(dict.fromkeys(row))
        fields = [(n, "") for n in names]
    return fields


def _cell(value: Any, base_type: str) -> str:
    if value is None:
        return ""
    if base_type == "DATETIME" and isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value / 1000, UTC)
        return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# Columns shown when a job list or per-device results have several rows: (marker, columns); the
# single-row view shows every field.
_MULTI_ROW_COLUMNS: tuple[tuple[frozenset[str], frozenset[str]], ...] = (
    (
        frozenset({"deviceId", "methodStatus"}),
        frozenset(
            {"deviceId", "status", "methodStatus", "methodPayload", "errorCode", "errorDescription"}
        ),
    ),
    (
        frozenset({"jobId", "deviceCount"}),
        frozenset(
            {
                "jobId",
                "type",
                "status",
                "createdTime",
                "methodName",
                "deviceCount",
                "succeededCount",
                "failedCount",
                "summary",
            }
        ),
    ),
)


def infotable_table(doc: Mapping[str, Any], title: str | None = None) -> Table:
    """A rich table of an InfoTable (ThingWorx JSON).

    One row is shown vertically (field, value); several rows as columns, leaving out the columns
    that are empty in every row, and for per-device results and job lists all but the telling
    columns.
    """
    fields = _fields(doc)
    rows: list[Mapping[str, Any]] = list(doc.get("rows") or [])
    if len(rows) == 1:
        table = Table(title=title, show_lines=False)
        table.add_column("field", no_wrap=True)
        table.add_column("value", overflow="fold")
        for name, base_type in fields:
            text = _cell(rows[0].get(name), base_type)
            if text:
                table.add_row(name, text)
        return table
    names = {n for n, _ in fields}
    preset = next((cols for marker, cols in _MULTI_ROW_COLUMNS if marker <= names), None)
    candidates = [(n, t) for n, t in fields if preset is None or n in preset]
    shown = [(n, t) for n, t in candidates if any(_cell(r.get(n), t) for r in rows)] or fields
    table = Table(title=title)
    for n, t in shown:
        if n in _ID_COLUMNS:
            # An id is never cut: the column is as wide as its longest id, others fold first.
            longest = max([len(n), *(len(_cell(r.get(n), t)) for r in rows)])
            table.add_column(n, no_wrap=True, min_width=longest)
        else:
            table.add_column(n, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(n), t) for n, t in shown))
    if not rows:
        table.caption = "no rows"
        table.min_width = 12
    return table


# --- call ---------------------------------------------------------------------------------------


def _http_deadline(settings: Settings, inputs: Mapping[str, Any] | None = None) -> float:
    """How long one REST call may take: the agent's own deadline for it, plus a margin."""
    jobs = settings.jobs
    given = inputs or {}

    def seconds(name: str, default: int) -> float:
        value = given.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return float(default)

    direct = (
        seconds("connectTimeoutInSeconds", jobs.default_connect_timeout)
        + seconds("responseTimeoutInSeconds", jobs.default_response_timeout)
        + jobs.direct_call_margin
    )
    return max(jobs.call_deadline, direct) + jobs.direct_call_margin


async def call_service(
    http: aiohttp.ClientSession,
    root: str,
    app_key: str,
    thing: str,
    service: str,
    inputs: Mapping[str, Any],
) -> dict[str, Any]:
    """POST one service call through the REST convention and return the InfoTable JSON.

    Raises:
        CallError: the server answered an error (its one-line message) or could not be reached.
    """
    url = f"{root}/Things/{quote(thing, safe='')}/Services/{quote(service, safe='')}"
    headers = {"appKey": app_key, "Accept": "application/json"}
    try:
        async with http.post(url, json=dict(inputs), headers=headers) as reply:
            text = await reply.text()
            if reply.status != 200:
                message = " ".join(text.split()) or reply.reason or ""
                raise CallError(f"HTTP {reply.status}: {message}")
            try:
                doc = json.loads(text) if text.strip() else {}
            except ValueError:
                raise CallError(f"the answer is not JSON: {text[:200]}") from None
    except aiohttp.ClientError as exc:
        raise CallError(
            f"cannot reach {root}: {exc} (is `jobs-agent run` running, or is --url right?)"
        ) from None
    if not isinstance(doc, dict):
        raise CallError("the answer is not an InfoTable")
    return doc


def _job_row(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    rows = doc.get("rows") or []
    if len(rows) == 1 and isinstance(rows[0], dict) and "jobId" in rows[0] and "status" in rows[0]:
        return dict(rows[0])
    return None


def _count(row: Mapping[str, Any], key: str) -> int:
    value = row.get(key)
    return int(value) if isinstance(value, int | float) else 0


async def _follow_job(
    http: aiohttp.ClientSession,
    root: str,
    app_key: str,
    thing: str,
    job: dict[str, Any],
    *,
    timeout: float | None,
    interval: float,
    console: Console,
    show: bool = True,
) -> dict[str, Any]:
    """Poll GetJob (with a progress bar when ``show``) until the job ends; return its last
    GetJob answer (the first answer when the job had ended already).

    Raises:
        WaitTimeout: the deadline passed first.
    """
    last: dict[str, Any] = {"rows": [job]}
    job_id = str(job["jobId"])
    if timeout is None:
        window = float(job.get("maxExecutionTimeInSeconds") or 3600)
        start_ms = job.get("startTime")
        wait_start = 0.0
        if isinstance(start_ms, int | float):
            wait_start = max(0.0, start_ms / 1000 - time.time())
        timeout = wait_start + window + _WAIT_SLACK
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False, disable=not show) as progress:
        task = progress.add_task(f"job {job_id}", total=None, detail=job.get("status", ""))
        while True:
            total = _count(job, "deviceCount")
            done = _count(job, "succeededCount") + _count(job, "failedCount")
            detail = (
                f"{job.get('status')}: {_count(job, 'succeededCount')} succeeded, "
                f"{_count(job, 'failedCount')} failed"
            )
            progress.update(task, total=total or None, completed=done, detail=detail)
            if job.get("status") in _TERMINAL_STATUSES:
                return last
            if loop.time() >= deadline:
                raise WaitTimeout(
                    f"job {job_id} still {job.get('status')} after {timeout:g} s "
                    "(raise --timeout, or follow it with AzureIotDeviceJobGetJob)"
                )
            await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))
            doc = await call_service(
                http, root, app_key, thing, "AzureIotDeviceJobGetJob", {"jobId": job_id}
            )
            row = _job_row(doc)
            if row is None:
                raise CallError(f"GetJob of {job_id} did not answer one job row")
            job, last = row, doc


def _wait_status(job: Mapping[str, Any]) -> int:
    """The exit status of ``call --wait`` for the job's last row."""
    status = job.get("status")
    if status != "completed":
        return EXIT_FAILED
    return EXIT_DEVICES_FAILED if _count(job, "failedCount") else EXIT_OK


async def call(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    """``jobs-agent call``: call one service and print its InfoTable; with ``--wait`` follow the
    job it scheduled, then print its per-device results.

    Returns:
        The exit status.
    """
    err = Console(stderr=True)
    try:
        inputs = parse_inputs(args.inputs)
        root = rest_root(
            args.url or f"http://{settings.embedded.host}:{settings.embedded.thingworx_port}"
        )
    except ValueError as exc:
        err.print(f"jobs-agent call: {exc}", markup=False)
        return 2
    app_key = _app_key_for(settings, args.app_key)
    if not app_key:
        err.print(f"jobs-agent call: no application key: set ${APP_KEY_ENV} or pass --app-key")
        return 2
    thing = args.thing or settings.thingworx.gateway_thing
    timeout = aiohttp.ClientTimeout(total=_http_deadline(settings, inputs))
    as_json = getattr(args, "output", "table") == "json"

    def emit(doc: Mapping[str, Any], title: str) -> None:
        if as_json:
            console.file.write(json.dumps(doc, separators=(",", ":")) + "\n")
            console.file.flush()
        else:
            console.print(infotable_table(doc, title=title))

    job_id = ""
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            doc = await call_service(http, root, app_key, thing, args.service, inputs)
            job = _job_row(doc) if args.wait else None
            if job is None:
                emit(doc, f"{thing}.{args.service}")
                if args.wait:
                    err.print("jobs-agent call: --wait: the result is not a job; nothing to follow")
                return EXIT_OK
            job_id = str(job["jobId"])
            if not as_json:
                emit(doc, f"{thing}.{args.service}")
            following = asyncio.ensure_future(
                _follow_job(
                    http,
                    root,
                    app_key,
                    thing,
                    job,
                    timeout=args.timeout,
                    interval=args.poll_interval,
                    console=console,
                    show=not as_json,
                )
            )
            loop = asyncio.get_running_loop()
            on_sigint = False
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                # Only the main thread's loop can own SIGINT (not e.g. a test's worker thread).
                loop.add_signal_handler(signal.SIGINT, following.cancel)
                on_sigint = True
            try:
                final_doc = await following
            except asyncio.CancelledError:
                if following.cancelled() and not _current_task_cancelling():
                    err.print(_stopped_watching(job_id, thing), markup=False, soft_wrap=True)
                    return EXIT_INTERRUPTED
                raise
            finally:
                if on_sigint:
                    loop.remove_signal_handler(signal.SIGINT)
            final = _job_row(final_doc) or job
            literal = job_id.replace("\\", "\\\\").replace("'", "\\'")
            results = await call_service(
                http,
                root,
                app_key,
                thing,
                "AzureIotDeviceJobQueryJobResults",
                {"query": f"SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '{literal}'"},
            )
            if as_json:
                emit({"job": final_doc, "results": results}, "")
            else:
                emit(final_doc, f"job {job_id}")
                emit(results, f"job {job_id}: per-device results")
                if final.get("summary"):
                    console.print(str(final["summary"]), markup=False)
            return _wait_status(final)
    except WaitTimeout as exc:
        err.print(f"jobs-agent call: {args.service}: {exc}", markup=False)
        return EXIT_WAIT_TIMEOUT
    except CallError as exc:
        err.print(f"jobs-agent call: {args.service}: {exc}", markup=False)
        return EXIT_FAILED
    except TimeoutError:
        err.print(f"jobs-agent call: {args.service}: no answer within {timeout.total:g} s")
        return EXIT_FAILED


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _stopped_watching(job_id: str, thing: str) -> str:
    """The one line Ctrl-C during ``--wait`` prints."""
    again = f"jobs-agent call AzureIotDeviceJobGetJob jobId={shlex.quote(job_id)}"
    if thing:
        again += f" --thing {shlex.quote(thing)}"
    return (
        f"stopped watching job {job_id}; it keeps running on the hub. Follow it again with: "
        f"{again} --wait"
    )


# --- run ----------------------------------------------------------------------------------------


def _install_stop(stop: asyncio.Event) -> Callable[[], None]:
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)

    def remove() -> None:
        for sig in signals:
            loop.remove_signal_handler(sig)

    return remove


def _configuration_problems(settings: Settings) -> list[str]:
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


async def _serve(
    settings: Settings,
    stop: asyncio.Event,
    on_ready: Callable[[Any, Any], Awaitable[None]],
    err: Console,
) -> int:
    """Run AgentApp on ``settings`` (with the health server) until ``stop`` is set."""
    from agent.app import AgentApp
    from agent.channel import ChannelError
    from agent.health import HealthServer, HubProbe
    from agent.iothub import IotHubError
    from agent.registry import RegistryError
    from wrappers import WrapperConfigError

    try:
        app = AgentApp(settings)
    except (IotHubError, WrapperConfigError, RegistryError, ChannelError) as exc:
        err.print(f"jobs-agent: configuration error: {exc}", markup=False)
        return 2
    health: HealthServer | None = None
    task = asyncio.create_task(app.run(), name="agent")
    try:
        if settings.health.enabled:
            health = HealthServer(
                settings.health,
                app.channel,
                settings.thingworx.url,
                HubProbe.for_client(app.client, interval=settings.health.probe_interval),
                load=lambda: app.client.load,
            )
            try:
                await health.start()
            except OSError as exc:
                health = None
                err.print(
                    f"jobs-agent: the health endpoint cannot listen on {settings.health.host}:"
                    f"{settings.health.port}: {exc}; set JOBS_AGENT_HEALTH__PORT "
                    "(or JOBS_AGENT_HEALTH__ENABLED=false)",
                    markup=False,
                )
                return 1
        stopper = asyncio.create_task(stop.wait())
        ready = asyncio.create_task(app.channel.wait_ready(float("inf")))
        try:
            await asyncio.wait({task, stopper, ready}, return_when=asyncio.FIRST_COMPLETED)
            if ready.done() and not ready.cancelled() and ready.exception() is None:
                await on_ready(app, health)
                await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (stopper, ready):
                waiter.cancel()
        failure = task.exception() if task.done() else None
        if failure is not None:
            err.print(f"jobs-agent: the agent stopped: {failure}", markup=False)
            return 2 if isinstance(failure, ChannelError) else 1
        return 0
    finally:
        await app.stop()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(settings.thingworx.connect_timeout * 2):
                await asyncio.gather(task, return_exceptions=True)
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if health is not None:
            await health.stop()


def _banner(
    console: Console,
    info: Any,
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
        (sample, "AzureIotDeviceJobScheduleTwinUpdateJob", patch),
        (gateway, "AzureIotDeviceJobScheduleDeviceMethodJob", job),
    ):
        out(
            f"  curl -s -X POST -H {header} -H 'Content-Type: application/json' "
            f"-d {shlex.quote(body)} {base}/{thing}/Services/{service}",
            markup=False,
            soft_wrap=True,
        )
    out(
        f"  {call_prefix}{_jobs_agent_command()} call "
        "AzureIotDeviceJobScheduleDeviceMethodJob methodName=reboot "
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
    from agent.embedded import new_app_key

    if os.environ.get(APP_KEY_ENV):
        return os.environ[APP_KEY_ENV], f"${APP_KEY_ENV}"
    configured = settings.thingworx.app_key.get_secret_value()
    if configured:
        return configured, "thingworx.app_key"
    return new_app_key(), KEY_GENERATED


async def _run_embedded(settings: Settings, console: Console, err: Console) -> int:
    from agent.embedded import EmbeddedEnds, EmbeddedError

    stop = asyncio.Event()
    remove = _install_stop(stop)
    try:
        app_key, key_source = embedded_app_key(settings)
        ends = EmbeddedEnds(settings.embedded, app_key)
        try:
            info = await ends.start()
        except EmbeddedError as exc:
            err.print(f"jobs-agent: {exc}", markup=False)
            return 1
        try:
            agent_settings = ends.agent_settings(settings)

            async def on_ready(app: Any, health: Any) -> None:
                # The banner comes after the start-up logging: once the stand-in has learned
                # the services of every bound Thing (the last start-up step that logs), with
                # the log stream flushed, and written in one piece (nothing interleaves).
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
                sys.stderr.flush()
                with console:  # rich buffers everything printed inside, then writes it once
                    _banner(
                        console,
                        info,
                        settings,
                        app_key,
                        key_source,
                        health.url if health is not None else None,
                    )
                    console.print(f"ready: open {info.thingworx_url} (Ctrl-C to stop)")
                console.file.flush()

            return await _serve(agent_settings, stop, on_ready, err)
        finally:
            await ends.stop()
            console.print("stopped")
            console.file.flush()
    finally:
        remove()


async def _run_real(settings: Settings, console: Console, err: Console) -> int:
    problems = _configuration_problems(settings)
    if problems:
        for problem in problems:
            err.print(f"jobs-agent: configuration error: {problem}", markup=False)
        return 2
    stop = asyncio.Event()
    remove = _install_stop(stop)
    try:

        async def on_ready(app: Any, health: Any) -> None:
            where = f"; health at {health.url}/healthz" if health is not None else ""
            console.print(
                f"ready: connected to {settings.thingworx.url}, hub {app.client.host}{where}",
                markup=False,
            )
            console.file.flush()

        return await _serve(settings, stop, on_ready, err)
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


# --- check --------------------------------------------------------------------------------------


def _thingworx_hint(error: str) -> str:
    """What to fix for the channel's ``last_error``."""
    text = error.lower()
    if text.startswith("authentication refused"):
        return "ThingWorx refused the application key: check thingworx.app_key"
    if "certificate" in text or "ssl" in text:
        return (
            "the server's TLS certificate is not trusted: set thingworx.ca_file to its CA "
            "(or thingworx.verify_tls = false for a test server)"
        )
    if "http 404" in text:
        return "no AlwaysOn endpoint there: thingworx.url should end with /Thingworx/WS"
    return "cannot reach ThingWorx: check thingworx.url and that the server is up and reachable"


def _hub_hint(exc: Exception) -> str:
    from agent.iothub import HubRequestError, HubTimeout, HubUnreachable

    text = str(exc).lower()
    if isinstance(exc, HubRequestError) and exc.http_status in (401, 403):
        return (
            "the hub refused the credentials: check iothub.connection_string (its policy needs "
            "registry read and service connect)"
        )
    if isinstance(exc, HubUnreachable) and ("tls" in text or "certificate" in text):
        return "the hub's TLS certificate is not trusted: set iothub.ca_file to its CA"
    if isinstance(exc, HubUnreachable):
        return "cannot reach the hub: check the connection string's HostName and the network"
    if isinstance(exc, HubTimeout):
        return "the hub did not answer in time: check the network (iothub.request_timeout)"
    return "the hub answered an error: see the message"


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

    ThingWorx is checked by AUTH, then BIND and UNBIND of the gateway Thing. When an agent for
    the same ThingWorx already runs here (its ``/healthz`` answers on the configured health
    port), the BIND is not tried unless ``force_bind``: ThingWorx keeps the last bind, so it
    would take the gateway Thing from that agent, and the UNBIND would leave it unbound. The
    running agent's own state is reported instead.

    Returns:
        The exit status: 0 all good, 1 an end failed, 2 the configuration is wrong.
    """
    from agent.channel import AlwaysOnClient
    from agent.iothub import IotHubClient, IotHubError
    from agent.registry import ThingRegistry
    from wrappers import WrapperConfigError, load_wrappers

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
        return 0
    problems = _configuration_problems(settings)
    if problems:
        for problem in problems:
            fail("configuration", problem.split(":")[0], problem.split(": ", 1)[-1])
        return 2
    try:
        wrappers = load_wrappers(Path(settings.jobs.wrappers_dir))
    except WrapperConfigError as exc:
        fail("wrappers", str(exc), f"fix the declarations in {settings.jobs.wrappers_dir}")
        return 2
    console.print(
        f"{ok} wrappers: {len(wrappers)} from {settings.jobs.wrappers_dir}", highlight=False
    )
    hub_settings = settings.iothub.model_copy(update={"read_retries": 0})
    try:
        client = IotHubClient(hub_settings, settings.jobs)
    except IotHubError as exc:
        fail("iothub.connection_string", str(exc), "use the hub's service connection string")
        return 2

    try:
        # ThingWorx: AUTH + BIND of the gateway Thing through a short-lived channel.
        twx = settings.thingworx
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
            channel = AlwaysOnClient(
                twx, ThingRegistry(settings.jobs), logger=quiet, bind=running is None
            )
        except Exception as exc:
            fail("thingworx.url", str(exc), "use wss://<host>/Thingworx/WS")
            return 2
        budget = twx.connect_timeout + 2 * twx.auth_timeout
        task = asyncio.create_task(channel.run())
        ready = asyncio.create_task(channel.wait_ready(budget))
        failed = asyncio.create_task(channel.wait_error(budget))
        try:
            await asyncio.wait({ready, failed, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready_ok = ready.done() and not ready.cancelled() and ready.exception() is None
            failed.cancel()
            ready.cancel()
            await channel.stop()
            await asyncio.gather(task, failed, ready, return_exceptions=True)
        if not ready_ok:
            error = channel.last_error
            if error is not None:
                fail(f"ThingWorx {twx.url}", error, _thingworx_hint(error))
            elif task.done() and task.exception() is not None:
                fail(f"ThingWorx {twx.url}", str(task.exception()), "fix the [thingworx] settings")
            else:
                fail(
                    f"ThingWorx {twx.url}",
                    f"not ready within {budget:g} s",
                    "check the URL and the network (thingworx.connect_timeout, auth_timeout)",
                )
            return 1
        if running is None:
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
            jobs = await client.list_jobs(max_jobs=1)
        except IotHubError as exc:
            fail(f"IoT Hub {client.host}", str(exc), _hub_hint(exc))
            return 1
        console.print(
            f"{ok} IoT Hub {client.host}: reachable, credentials accepted "
            f"({len(jobs)} job{'s' if len(jobs) != 1 else ''} listed)",
            highlight=False,
        )
    finally:
        await client.close()
    console.print("all checks passed")
    return 0


# --- entry point --------------------------------------------------------------------------------


def _load(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except FileNotFoundError as exc:
        print(f"jobs-agent: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except ValidationError as exc:
        for line in settings_errors(exc, config):
            print(f"jobs-agent: configuration error: {line}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jobs-agent`` console script; returns the exit status."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command == "call" and all("=" in e and not e.startswith("-") for e in extra):
            args.inputs = [*args.inputs, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    settings = _load(args.config)
    # Piped output (a file, a CI log) gets wide tables instead of rich's 80 columns.
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    console = Console(soft_wrap=True, width=_PIPED_WIDTH if piped else None)
    if args.command == "run":
        configure_logging(settings.log.level, settings.log.format)
        return asyncio.run(run(settings, console))
    if args.command == "check":
        level = "DEBUG" if settings.log.level == "DEBUG" else "WARNING"
        configure_logging(level, settings.log.format)
        return asyncio.run(check(settings, console, force_bind=args.bind))
    configure_logging("WARNING", settings.log.format)
    return asyncio.run(call(settings, args, console))


if __name__ == "__main__":
    raise SystemExit(main())
