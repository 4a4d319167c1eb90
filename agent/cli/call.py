"""``jobs-agent call``: a REST client of ThingWorx's service convention that can follow the job it
scheduled.

:func:`call` POSTs one service call (:func:`call_service`), prints the InfoTable (or its JSON with
``--output json``) and, with ``--wait``, polls GetJob (with a progress bar) until the job ends,
then prints the per-device results.

Rules:
- Exit status (:mod:`agent.cli.args`): 0 success, 1 the call or the job failed, 2 a usage error,
  3 the job completed but some devices failed, 4 the wait ended before the job did, 130 Ctrl-C
  stopped the watching (the job goes on on the hub).
- Service names and job statuses come from :mod:`services`; none is retyped here.
- Errors are one line on stderr, naming the service.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import signal
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agent.cli.args import (
    APP_KEY_ENV,
    EXIT_DEVICES_FAILED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_WAIT_TIMEOUT,
    app_key_for,
    parse_inputs,
    rest_root,
)
from agent.cli.tables import infotable_table
from agent.errors import AgentError
from agent.settings import Settings
from services import GET_JOB, QUERY_JOB_RESULTS
from services.mapping import TERMINAL_STATUSES

__all__ = [
    "CallFailed",
    "WaitTimeout",
    "call",
    "call_service",
    "emitter",
    "failure_status",
    "http_deadline",
    "interruptible",
    "rest_ends",
]

T = TypeVar("T")

_WAIT_SLACK = 120.0  # seconds --wait allows beyond the job's own window by default


class CallFailed(AgentError):
    """A ``call`` that failed: the stand-in's (or ThingWorx's) one-line message."""


class WaitTimeout(CallFailed):
    """``call --wait`` gave up before the job ended (the job goes on on the hub)."""


def http_deadline(settings: Settings, inputs: Mapping[str, Any] | None = None) -> float:
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
        CallFailed: the server answered an error (its one-line message) or could not be reached.
    """
    url = f"{root}/Things/{quote(thing, safe='')}/Services/{quote(service, safe='')}"
    headers = {"appKey": app_key, "Accept": "application/json"}
    try:
        async with http.post(url, json=dict(inputs), headers=headers) as reply:
            text = await reply.text()
            if reply.status != 200:
                message = " ".join(text.split()) or reply.reason or ""
                raise CallFailed(f"HTTP {reply.status}: {message}")
            try:
                doc = json.loads(text) if text.strip() else {}
            except ValueError:
                raise CallFailed(f"the answer is not JSON: {text[:200]}") from None
    except aiohttp.ClientError as exc:
        raise CallFailed(
            f"cannot reach {root}: {exc} (is `jobs-agent run` running, or is --url right?)"
        ) from None
    if not isinstance(doc, dict):
        raise CallFailed("the answer is not an InfoTable")
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
            if job.get("status") in TERMINAL_STATUSES:
                return last
            if loop.time() >= deadline:
                raise WaitTimeout(
                    f"job {job_id} still {job.get('status')} after {timeout:g} s "
                    f"(raise --timeout, or follow it with {GET_JOB})"
                )
            await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))
            doc = await call_service(http, root, app_key, thing, GET_JOB, {"jobId": job_id})
            row = _job_row(doc)
            if row is None:
                raise CallFailed(f"GetJob of {job_id} did not answer one job row")
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
        root, app_key = rest_ends(settings, args)
    except ValueError as exc:
        err.print(f"jobs-agent call: {exc}", markup=False)
        return EXIT_USAGE
    thing = args.thing or settings.thingworx.gateway_thing
    timeout = aiohttp.ClientTimeout(total=http_deadline(settings, inputs))
    as_json = getattr(args, "output", "table") == "json"
    emit = emitter(console, as_json=as_json)
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
            interrupted, final_doc = await interruptible(
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
            if interrupted or final_doc is None:
                err.print(_stopped_watching(job_id, thing), markup=False, soft_wrap=True)
                return EXIT_INTERRUPTED
            final = _job_row(final_doc) or job
            literal = job_id.replace("\\", "\\\\").replace("'", "\\'")
            results = await call_service(
                http,
                root,
                app_key,
                thing,
                QUERY_JOB_RESULTS,
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
    except (CallFailed, TimeoutError) as exc:
        return failure_status(err, f"jobs-agent call: {args.service}", exc, timeout)


def rest_ends(settings: Settings, args: argparse.Namespace) -> tuple[str, str]:
    """The REST root (``--url``, else the embedded stand-in) and the application key
    (:func:`~agent.cli.args.app_key_for`) of ``call`` and ``rollout``.

    Raises:
        ValueError: a --url that is not http(s), or no application key anywhere.
    """
    root = rest_root(
        args.url or f"http://{settings.embedded.host}:{settings.embedded.thingworx_port}"
    )
    app_key = app_key_for(settings, args.app_key)
    if not app_key:
        raise ValueError(f"no application key: set ${APP_KEY_ENV} or pass --app-key")
    return root, app_key


def emitter(console: Console, *, as_json: bool) -> Callable[[Mapping[str, Any], str], None]:
    """Print an InfoTable (or a document of them): a rich table titled ``title``, or one line
    of JSON for scripts (``--output json``)."""

    def emit(doc: Mapping[str, Any], title: str) -> None:
        if as_json:
            console.file.write(json.dumps(doc, separators=(",", ":")) + "\n")
            console.file.flush()
        else:
            console.print(infotable_table(doc, title=title))

    return emit


def failure_status(
    err: Console, prefix: str, exc: CallFailed | TimeoutError, timeout: aiohttp.ClientTimeout
) -> int:
    """Print a failed call or wait in one line after ``prefix``; its exit status (4 for a
    :class:`WaitTimeout`, else 1)."""
    if isinstance(exc, TimeoutError):
        err.print(f"{prefix}: no answer within {timeout.total:g} s", markup=False, soft_wrap=True)
        return EXIT_FAILED
    err.print(f"{prefix}: {exc}", markup=False, soft_wrap=True)
    return EXIT_WAIT_TIMEOUT if isinstance(exc, WaitTimeout) else EXIT_FAILED


async def interruptible(work: Coroutine[Any, Any, T]) -> tuple[bool, T | None]:
    """Run ``work`` (the following of a job or rollout) until it ends or Ctrl-C stops it.

    Returns:
        ``(False, its result)``, or ``(True, None)`` when SIGINT cancelled it (on the main
        thread's loop only; elsewhere Ctrl-C is the caller's).
    """
    following = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    on_sigint = False
    with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
        # Only the main thread's loop can own SIGINT (not e.g. a test's worker thread).
        loop.add_signal_handler(signal.SIGINT, following.cancel)
        on_sigint = True
    try:
        return False, await following
    except asyncio.CancelledError:
        if following.cancelled() and not _current_task_cancelling():
            return True, None
        raise
    finally:
        if on_sigint:
            loop.remove_signal_handler(signal.SIGINT)


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _stopped_watching(job_id: str, thing: str) -> str:
    """The one line Ctrl-C during ``--wait`` prints."""
    again = f"jobs-agent call {GET_JOB} jobId={shlex.quote(job_id)}"
    if thing:
        again += f" --thing {shlex.quote(thing)}"
    return (
        f"stopped watching job {job_id}; it keeps running on the hub. Follow it again with: "
        f"{again} --wait"
    )
