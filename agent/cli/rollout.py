"""``jobs-agent rollout plan|start|show|pause|resume|cancel``: the gateway Thing's rollout
services (docs/rollouts.md), called through ThingWorx's REST convention as ``call`` does.

``plan`` prints the dry run; ``start`` starts a rollout (or a wrapper's ``<Name>Rollout`` with
``--wrapper``) and prints its row; ``show`` prints the rollout and a table of its waves
(``AzureIotDeviceJobGetRolloutWaves``); ``pause``, ``resume`` and ``cancel`` print the changed
row. With ``--wait`` (start, show, resume) it follows the rollout to a final status: a progress
bar per wave on a terminal, one plain line per change otherwise; then the rollout and its waves.

Rules:
- Exit status (:mod:`agent.cli.args`): 0 success (with ``--wait``: completed, every device
  succeeded), 1 the call failed or the rollout ended ``aborted``, ``failed`` or ``cancelled``,
  2 a usage error, 3 completed but some devices failed, 4 ``--timeout`` passed first, 130 Ctrl-C
  stopped the watching: the rollout goes on in the agent, and the line says how to follow it.
- Service names and statuses come from :mod:`services.rollouts`; none is retyped here.
- Errors are one line on stderr, naming the action.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
from collections.abc import Mapping
from typing import Any

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from agent.cli.args import (
    EXIT_DEVICES_FAILED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    rollout_inputs,
)
from agent.cli.call import (
    CallFailed,
    WaitTimeout,
    call_service,
    emitter,
    failure_status,
    http_deadline,
    interruptible,
    rest_ends,
)
from agent.settings import Settings
from services.rollouts import (
    CANCEL_ROLLOUT,
    GET_ROLLOUT,
    GET_ROLLOUT_WAVES,
    PAUSE_ROLLOUT,
    PLAN_ROLLOUT,
    RESUME_ROLLOUT,
    START_ROLLOUT,
)

__all__ = ["FINAL_STATUSES", "rollout"]

FINAL_STATUSES = frozenset({"completed", "aborted", "cancelled", "failed"})
"""Rollout statuses nothing follows (docs/rollouts.md, States)."""

_WAVE_ROWS = 1000  # GetRolloutWaves' maxRows: the first 1,000 rounds (the services' default)
_ACTIONS = {"pause": PAUSE_ROLLOUT, "resume": RESUME_ROLLOUT, "cancel": CANCEL_ROLLOUT}


def _row(doc: Mapping[str, Any], what: str) -> dict[str, Any]:
    rows = doc.get("rows") or []
    if len(rows) != 1 or not isinstance(rows[0], dict) or "rolloutId" not in rows[0]:
        raise CallFailed(f"{what} did not answer one rollout row")
    return dict(rows[0])


def _count(row: Mapping[str, Any], key: str) -> int:
    value = row.get(key)
    return int(value) if isinstance(value, int | float) else 0


def exit_status(row: Mapping[str, Any]) -> int:
    """The exit status of a followed rollout's final row."""
    if row.get("status") != "completed":
        return EXIT_FAILED
    return EXIT_DEVICES_FAILED if _count(row, "failedCount") else EXIT_OK


def _wave_label(wave: Mapping[str, Any]) -> str:
    attempt = _count(wave, "attempt")
    return f"wave {_count(wave, 'wave')}" + (f" retry {attempt - 1}" if attempt > 1 else "")


def _wave_detail(wave: Mapping[str, Any]) -> str:
    return (
        f"{wave.get('status')}: {_count(wave, 'succeeded')} succeeded, "
        f"{_count(wave, 'failed')} failed, {_count(wave, 'pending')} pending"
    )


def _rollout_line(row: Mapping[str, Any]) -> str:
    line = (
        f"rollout {row.get('rolloutId')} {row.get('status')}: wave {_count(row, 'wave')} of "
        f"{_count(row, 'waveCount')}, {_count(row, 'succeededCount')} succeeded, "
        f"{_count(row, 'failedCount')} failed, {_count(row, 'pendingCount')} pending"
    )
    return line + (f" ({row['reason']})" if row.get("reason") else "")


class _Client:
    """The REST calls of one command: the gateway Thing's services."""

    def __init__(self, http: aiohttp.ClientSession, root: str, app_key: str, thing: str) -> None:
        self.http, self.root, self.app_key, self.thing = http, root, app_key, thing

    async def call(self, service: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return await call_service(self.http, self.root, self.app_key, self.thing, service, inputs)

    async def rollout(self, rollout_id: str) -> dict[str, Any]:
        return await self.call(GET_ROLLOUT, {"rolloutId": rollout_id})

    async def waves(self, rollout_id: str) -> dict[str, Any]:
        return await self.call(GET_ROLLOUT_WAVES, {"rolloutId": rollout_id, "maxRows": _WAVE_ROWS})


class _Progress:
    """A bar per wave (on a terminal) or a plain line per change (otherwise)."""

    def __init__(self, console: Console, *, show: bool) -> None:
        self._console = console
        self._show = show
        self._bars = console.is_terminal and show
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            console=console,
            disable=not self._bars,
        )
        self._tasks: dict[tuple[int, int], TaskID] = {}
        self._seen: dict[Any, str] = {}

    def __enter__(self) -> _Progress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(None, None, None)

    def update(self, row: Mapping[str, Any], waves: list[Mapping[str, Any]]) -> None:
        if not self._show:
            return
        if not self._bars:
            self._line("rollout", _rollout_line(row))
        for wave in waves:
            key = (_count(wave, "wave"), _count(wave, "attempt"))
            total = _count(wave, "deviceCount")
            done = _count(wave, "succeeded") + _count(wave, "failed")
            label, detail = _wave_label(wave), _wave_detail(wave)
            if not self._bars:
                if wave.get("status") != "waiting" or key in self._seen:
                    self._line(key, f"{label}: {done}/{total} done, {detail}")
                continue
            task = self._tasks.get(key)
            if task is None:
                task = self._progress.add_task(label, total=total or None, detail=detail)
                self._tasks[key] = task
            self._progress.update(task, total=total or None, completed=done, detail=detail)

    def _line(self, key: Any, text: str) -> None:
        if self._seen.get(key) != text:
            self._seen[key] = text
            self._console.print(text, markup=False, highlight=False)


async def _follow(
    client: _Client,
    doc: dict[str, Any],
    *,
    timeout: float | None,
    interval: float,
    console: Console,
    show: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read the rollout and its waves until a final status; return the last answers.

    Raises:
        WaitTimeout: ``timeout`` passed first.
    """
    row = _row(doc, GET_ROLLOUT)
    rollout_id = str(row["rolloutId"])
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    with _Progress(console, show=show) as progress:
        while True:
            waves = await client.waves(rollout_id)
            progress.update(row, list(waves.get("rows") or []))
            if row.get("status") in FINAL_STATUSES:
                return doc, waves
            if deadline is not None and loop.time() >= deadline:
                raise WaitTimeout(
                    f"rollout {rollout_id} still {row.get('status')} after {timeout:g} s (it goes "
                    f"on; follow it with: jobs-agent rollout show {shlex.quote(rollout_id)} --wait)"
                )
            pause = interval if deadline is None else min(interval, deadline - loop.time())
            await asyncio.sleep(max(0.0, pause))
            doc = await client.rollout(rollout_id)
            row = _row(doc, GET_ROLLOUT)


def _stopped_watching(rollout_id: str, thing: str, default_thing: str) -> str:
    again = f"jobs-agent rollout show {shlex.quote(rollout_id)}"
    if thing != default_thing:
        again += f" --thing {shlex.quote(thing)}"
    return (
        f"stopped watching rollout {rollout_id}; it keeps running in the agent. Follow it again "
        f"with: {again} --wait"
    )


async def rollout(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    """``jobs-agent rollout ACTION``: call the rollout service, print it; with ``--wait`` follow
    the rollout to a final status.

    Returns:
        The exit status.
    """
    err = Console(stderr=True)
    action = args.action
    name = f"jobs-agent rollout {action}"
    try:
        service: str | None
        if action in ("plan", "start"):
            service, inputs = rollout_inputs(args)
            if service is not None and action == "plan":
                raise ValueError(
                    "plan has no wrapper form: plan with --method and --payload as the wrapper "
                    "would send them"
                )
            service = service or (PLAN_ROLLOUT if action == "plan" else START_ROLLOUT)
        elif action == "show":
            service, inputs = GET_ROLLOUT, {"rolloutId": args.rollout_id}
        else:
            service, inputs = _ACTIONS[action], {"rolloutId": args.rollout_id}
        root, app_key = rest_ends(settings, args)
    except ValueError as exc:
        err.print(f"{name}: {exc}", markup=False, soft_wrap=True)
        return EXIT_USAGE
    default_thing = settings.thingworx.gateway_thing
    thing = args.thing or default_thing
    as_json = args.output == "json"
    wait = bool(getattr(args, "wait", False))
    timeout = aiohttp.ClientTimeout(total=http_deadline(settings, inputs))
    emit = emitter(console, as_json=as_json)

    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            client = _Client(http, root, app_key, thing)
            doc = await client.call(service, inputs)
            if action == "plan" or (action != "show" and not wait):
                emit(doc, f"{thing}.{service}")
                return EXIT_OK
            row = _row(doc, service)
            rollout_id = str(row["rolloutId"])
            if not wait:  # show
                waves = await client.waves(rollout_id)
                if as_json:
                    emit({"rollout": doc, "waves": waves}, "")
                else:
                    emit(doc, f"rollout {rollout_id}")
                    emit(waves, f"rollout {rollout_id}: waves")
                return EXIT_OK
            if not as_json:
                emit(doc, f"{thing}.{service}")
            interrupted, followed = await interruptible(
                _follow(
                    client,
                    doc,
                    timeout=args.timeout,
                    interval=args.poll_interval,
                    console=console,
                    show=not as_json,
                )
            )
            if interrupted or followed is None:
                err.print(
                    _stopped_watching(rollout_id, thing, default_thing),
                    markup=False,
                    soft_wrap=True,
                )
                return EXIT_INTERRUPTED
            final_doc, waves = followed
            final = _row(final_doc, GET_ROLLOUT)
            if as_json:
                emit({"rollout": final_doc, "waves": waves}, "")
            else:
                emit(final_doc, f"rollout {rollout_id}")
                emit(waves, f"rollout {rollout_id}: waves")
                console.print(_rollout_line(final), markup=False, highlight=False)
            return exit_status(final)
    except (CallFailed, TimeoutError) as exc:
        where = name if isinstance(exc, WaitTimeout) else f"{name}: {service}"
        return failure_status(err, where, exc, timeout)
