"""Benchmark: a twin rollout over 100,000 devices in waves of 10,000 against one twin job.

Method. Three processes on 127.0.0.1, started as ``bench_agent_footprint`` starts them (its
helpers, no copy): the IoT Hub emulator (``python -m emulator.iothub --devices N --no-fleet``, no
tier: no pace, no job quota of its own; fresh data directory), the ThingWorx stand-in, and the
agent as an operator runs it (``jobs-agent run``, configured by environment variables, the shipped
wrappers, no device Thing, its default ``iothub.tier`` S1: one hub job at a time), with
``rollouts.poll_interval`` = ``--poll`` (default 0.1 s, chosen below), ``jobs.watch_interval``
the same (GetJob answers an active job from its watcher, which reads the hub once an interval:
at its default 5 s the job's end would be seen up to 5 s late) and its rollout store in its own
working directory. Every call goes through the stand-in's REST convention, as a
ThingWorx user would make it.

Each round runs both sides over the same N devices (``queryCondition`` ``IS_DEFINED(deviceId)``,
a tags + desired patch carrying the round number so that each patch changes every twin):

- **job**: ``AzureIotDeviceJobScheduleTwinUpdateJob`` (one hub job), then
  ``AzureIotDeviceJobGetJob`` every ``--watch`` seconds (0.1) until ``completed``;
- **rollout**: ``AzureIotDeviceJobStartRollout`` (``waveSize`` 10,000, ``growthFactor`` 1,
  ``maxWaveSize`` 10,000, no pause, no retries, ``maxFailurePercent`` 0), which resolves the
  target with one device query, then ``AzureIotDeviceJobGetRollout`` every ``--watch`` seconds
  until ``completed``. Each wave is one round of hub jobs whose conditions are
  ``deviceId IN [...]`` lists under IoT Hub's 8 KB (about 20 per wave of 10,000), created one at
  a time (S1), each polled, its ``devices.jobs`` rows read back and judged.

Wall time: from sending the first call to the poll that saw the end (the same ``--watch`` poll
on both sides, so both are late by up to one poll). The rollout's time includes resolving the
target (printed apart: the Start call's own time). The two sides alternate (job, rollout, job,
rollout...) for ``--rounds`` rounds, so that the other sessions' load on the machine falls on
both alike; the ratio is rollout / job per round and of the medians.

Memory: the agent's ``VmRSS`` from ``/proc/PID/status`` before the rollout, sampled at every
poll during it (peak, and steady = the median of the samples of its second half), and after it;
``VmHWM`` (the kernel's peak) after. Planning 100,000 devices: ``bench_rollout_plan`` (run in
this process, its own method and output).

Why ``poll_interval`` 0.1 s: the engine learns that a wave's hub job ended at its next step, so
every hub job costs up to one interval of waiting; with about 200 hub jobs for 100,000 devices,
the default 2 s would add minutes (the interval is for production, where a job takes seconds to
hours and a hub read costs quota), and 0.1 s keeps the wait under the jobs' own time here while
a step (a few store reads, one hub read) stays far below it.

With ``--agent-tiers S1,S3`` one agent per tier runs on the one hub (the unpaced emulator by
default: no quota of its own, so the agent's tier alone sets how many of a round's parts run
side by side: 1 on S1, 10 on S3), and each round runs job and rollout on each agent in turn
(S1 job, S1 rollout, S3 job, S3 rollout...). The rollout's hub jobs are also read as time
with one or more of them on the hub (busy), time with none (idle: the per-part overhead), and
the most at once.

With ``--tier S3`` both the emulator and the agent take that tier: the hub paces device
operations (50 a second per unit) and allows 10 jobs at once, as a real hub would; with
``--units 10`` (an S3 hub's most) 500 a second, so 100,000 devices take about 200 s a side: the
ratio where the hub's pace, not the per-job overhead, sets the time, at the issue's size.

Run: ``python -m benchmarks.bench_rollout [--devices 100000] [--wave 10000] [--rounds 2]
[--poll 0.1] [--watch 0.1] [--tier S1|S2|S3] [--units N] [--agent-tiers S1,S3]
[--no-plan]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks import bench_rollout_plan
from benchmarks.bench_agent_footprint import Children, Rest, _start_agent, _status, _tail

CONDITION = "IS_DEFINED(deviceId)"
WAVE = 10_000
_TIMEOUT = 3600.0


@dataclass
class Side:
    """One run of one side (times in s, memory in MB)."""

    name: str
    wall: float = 0.0
    call: float = 0.0
    hub_jobs: int = 0
    hub_own: float = 0.0
    hub_gaps: float = 0.0
    hub_busy: float = 0.0
    hub_most: int = 0
    hub_boundary: float = 0.0
    tier: str = "S1"
    rss: list[float] = field(default_factory=list)
    before: float = 0.0
    after: float = 0.0
    hwm: float = 0.0
    row: dict[str, Any] = field(default_factory=dict)


def _patch(round_: int, side: str) -> dict[str, Any]:
    return {
        "tags": {"bench": {"side": side, "round": round_}},
        "properties": {"desired": {"firmware": f"2.{round_}.0", "side": side}},
    }


async def _watch(
    read: Callable[[], Awaitable[dict[str, Any]]],
    done: Callable[[dict[str, Any]], bool],
    every: float,
    pid: int,
    side: Side,
    started: float,
) -> None:
    """Poll ``read`` every ``every`` s until ``done``; sample the agent's RSS at each poll."""
    deadline = started + _TIMEOUT
    while True:
        row = await read()
        side.rss.append(_status(pid)["VmRSS"])
        if done(row):
            side.wall = time.perf_counter() - started
            side.row = row
            return
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{side.name}: not done after {_TIMEOUT:g} s: {row}")
        await asyncio.sleep(every)


async def _run_side(
    rest: Rest,
    side: Side,
    start: tuple[str, dict[str, Any]],
    read: tuple[str, dict[str, Any]],
    every: float,
    pid: int,
) -> Side:
    """Call ``start`` (service, inputs), then ``read`` every ``every`` s until its row's status
    is terminal; the wall time, the agent's RSS before, during and after."""
    side.before = _status(pid)["VmRSS"]
    started = time.perf_counter()
    await rest.call(*start)
    side.call = time.perf_counter() - started

    async def row() -> dict[str, Any]:
        answer = await rest.call(*read)
        first: dict[str, Any] = answer["rows"][0]
        return first

    terminal = ("completed", "aborted", "cancelled", "failed")
    await _watch(row, lambda r: r["status"] in terminal, every, pid, side, started)
    status = _status(pid)
    side.after, side.hwm = status["VmRSS"], status["VmHWM"]
    if side.row["status"] != "completed":
        raise SystemExit(f"{side.name} ended {side.row['status']}: {side.row}")
    return side


async def run_job(rest: Rest, round_: int, every: float, pid: int, tag: str = "") -> Side:
    """One twin job over every device, polled with GetJob until it ended."""
    job_id = f"bench-job-{tag}{round_}"
    inputs = {"jobId": job_id, "patch": _patch(round_, "job"), "queryCondition": CONDITION}
    return await _run_side(
        rest,
        Side("job", hub_jobs=1),
        ("AzureIotDeviceJobScheduleTwinUpdateJob", inputs),
        ("AzureIotDeviceJobGetJob", {"jobId": job_id}),
        every,
        pid,
    )


async def run_rollout(
    rest: Rest, round_: int, every: float, pid: int, wave: int, tag: str = ""
) -> Side:
    """One twin rollout over every device in waves of ``wave``, polled with GetRollout."""
    rollout_id = f"bench-rollout-{tag}{round_}"
    inputs = {
        "rolloutId": rollout_id,
        "type": "twinUpdate",
        "queryCondition": CONDITION,
        "patch": _patch(round_, "rollout"),
        "waveSize": wave,
        "growthFactor": 1,
        "maxWaveSize": wave,
        "maxFailurePercent": 0,
        "retries": 0,
        "pauseBetweenWavesSeconds": 0,
    }
    return await _run_side(
        rest,
        Side("rollout"),
        ("AzureIotDeviceJobStartRollout", inputs),
        ("AzureIotDeviceJobGetRollout", {"rolloutId": rollout_id}),
        every,
        pid,
    )


@dataclass(frozen=True)
class HubTimes:
    """A rollout's hub jobs as the emulator's database has them (times in s)."""

    jobs: int
    own: float
    """Their own times (created -> ended), summed."""
    busy: float
    """Time with at least one of them queued or running (the union of their intervals)."""
    idle: float
    """From the first one's creation to the last one's end, less ``busy``: no job of the
    rollout on the hub (the agent noticing an end, judging, admitting the next)."""
    most: int
    """The most of them queued or running at once."""
    boundary: float = 0.0
    """The median, over the waves after the first, of the time from the previous wave's last
    hub job ending to the wave's first hub job being created (the verdict and the admission)."""


def _hub_times(hub_file: Path, rollout_id: str) -> HubTimes:
    """The rollout's hub jobs, read-only from the emulator's database."""
    uri = f"file:{hub_file}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        rows = db.execute(
            "SELECT job_id, created_time, end_time FROM jobs WHERE job_id LIKE ? ORDER BY seq",
            (f"{rollout_id}-w%",),
        ).fetchall()
    times = sorted((_utc(created), _utc(ended)) for _, created, ended in rows)
    waves: dict[int, list[tuple[float, float]]] = {}
    for job_id, created, ended in rows:  # <rollout>-w<wave>-a<attempt>-p<part>
        wave = int(job_id[len(rollout_id) + 2 :].split("-", 1)[0])
        waves.setdefault(wave, []).append((_utc(created), _utc(ended)))
    ordered = [waves[w] for w in sorted(waves)]
    gaps = [
        min(s for s, _ in now) - max(e for _, e in before)
        for before, now in itertools.pairwise(ordered)
    ]
    own = sum(end - start for start, end in times)
    busy, reach = 0.0, float("-inf")
    for start, end in times:  # union of the intervals, sorted by start
        if end > reach:
            busy += end - max(start, reach)
            reach = end
    span = (max(e for _, e in times) - times[0][0]) if times else 0.0
    edges = sorted([(t[0], 1) for t in times] + [(t[1], -1) for t in times])
    most = max(itertools.accumulate(d for _, d in edges), default=0)
    boundary = statistics.median(gaps) if gaps else 0.0
    return HubTimes(len(times), own, busy, max(0.0, span - busy), most, boundary)


def _utc(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def run(args: argparse.Namespace) -> list[tuple[Side, Side]]:
    """Every round's two sides (see the module docstring)."""
    devices, poll, watch = args.devices, args.poll, args.watch
    tier = ("--tier", args.tier, "--units", str(args.units)) if args.tier else ()
    results: list[tuple[Side, Side]] = []
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp_name:
        tmp = Path(tmp_name)
        children = Children(tmp)
        try:
            data = tmp / "hub"
            began = time.perf_counter()
            await children.python(
                "emulator",
                [
                    *("emulator.iothub", "--data-dir", str(data), "--rest-port", "0"),
                    *("--mqtt-port", "0", "--devices", str(devices), "--no-fleet", *tier),
                    *("--log-level", "WARNING"),
                ],
            )
            print(f"emulator with {devices:,} devices ready in {time.perf_counter() - began:.1f} s")
            hub = json.loads((data / "hub.json").read_text())
            tiers = _agent_tiers(args)
            timeout = aiohttp.ClientTimeout(total=600)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                agents = {}
                for agent_tier in tiers:  # one agent per tier, all on the one hub
                    extra = {
                        "JOBS_AGENT_ROLLOUTS__POLL_INTERVAL": str(poll),
                        "JOBS_AGENT_ROLLOUTS__DATA_DIR": str(tmp / f"agent-data-{agent_tier}"),
                        "JOBS_AGENT_JOBS__WATCH_INTERVAL": str(poll),
                        "JOBS_AGENT_IOTHUB__TIER": agent_tier,
                        "JOBS_AGENT_IOTHUB__TIER_UNITS": str(args.units),
                    }
                    label = f"rollout-{agent_tier}"
                    agents[agent_tier], _ = await _start_agent(children, http, hub, 1, label, extra)
                    pid = agents[agent_tier].child.proc.pid
                    print(f"agent {agent_tier} ready, VmRSS {_status(pid)['VmRSS']:.1f} MB")
                try:
                    for round_ in range(1, args.rounds + 1):
                        for agent_tier, agent in agents.items():  # interleaved: job, rollout
                            pid, tag = agent.child.proc.pid, f"{agent_tier.lower()}-"
                            job = await run_job(agent.rest, round_, watch, pid, tag)
                            job.tier = agent_tier
                            _print_side(round_, job)
                            rollout = await run_rollout(
                                agent.rest, round_, watch, pid, args.wave, tag
                            )
                            times = _hub_times(data / "hub.sqlite", f"bench-rollout-{tag}{round_}")
                            rollout.tier = agent_tier
                            rollout.hub_jobs, rollout.hub_own = times.jobs, times.own
                            rollout.hub_gaps, rollout.hub_busy = times.idle, times.busy
                            rollout.hub_most = times.most
                            rollout.hub_boundary = times.boundary
                            _print_side(round_, rollout)
                            results.append((job, rollout))
                except Exception:
                    for agent_tier in agents:
                        stderr = tmp / f"agent-rollout-{agent_tier}" / "stderr"
                        print(_tail(stderr, 20), file=sys.stderr)
                    raise
                for agent in agents.values():
                    await agent.child.stop()
                    await agent.standin.stop()
        finally:
            await children.close()
    return results


def _agent_tiers(args: argparse.Namespace) -> list[str]:
    """The agents' tiers: ``--agent-tiers``, else ``--tier``, else S1."""
    if args.agent_tiers:
        return [t.strip().upper() for t in args.agent_tiers.split(",") if t.strip()]
    return [args.tier or "S1"]


def _print_side(round_: int, side: Side) -> None:
    extra = ""
    if side.name == "rollout":
        half = side.rss[len(side.rss) // 2 :] or side.rss
        extra = (
            f"; waves {side.row.get('waveCount')}, hub jobs {side.hub_jobs} "
            f"(their own time {side.hub_own:.1f} s, hub busy {side.hub_busy:.1f} s, "
            f"idle between them {side.hub_gaps:.1f} s, at most {side.hub_most} at once, "
            f"wave boundary median {side.hub_boundary:.2f} s), "
            f"succeeded {side.row.get('succeededCount'):,}; agent VmRSS before {side.before:.1f}, "
            f"peak {max(side.rss):.1f}, steady {statistics.median(half):.1f}, "
            f"after {side.after:.1f} MB (VmHWM {side.hwm:.1f})"
        )
    print(
        f"round {round_} {side.tier} {side.name:<7} {side.wall:7.2f} s "
        f"(first call {side.call:.2f} s){extra}",
        flush=True,
    )


def report(results: list[tuple[Side, Side]], args: argparse.Namespace) -> None:
    """Print the figures side by side, one table per agent tier."""
    devices, poll, watch = args.devices, args.poll, args.watch
    print(
        f"\n{devices:,} devices, waves of {min(args.wave, devices):,}, emulator tier "
        f"{f'{args.tier} x {args.units} units' if args.tier else 'none (no pace, no job quota)'}, "
        f"rollouts.poll_interval {poll:g} s, watch every {watch:g} s"
    )
    for tier in _agent_tiers(args):
        mine = [(j, r) for j, r in results if r.tier == tier]
        print(f"agent tier {tier}:")
        print(
            f"  {'round':>5}  {'job, s':>7}  {'rollout, s':>10}  {'ratio':>5}  {'Start, s':>8}  "
            f"{'hub jobs':>8}  {'at once':>7}  {'their time, s':>13}  {'busy, s':>7}  "
            f"{'idle, s':>7}"
        )
        for n, (job, rollout) in enumerate(mine, start=1):
            print(
                f"  {n:5d}  {job.wall:7.2f}  {rollout.wall:10.2f}  "
                f"{rollout.wall / job.wall:5.2f}  {rollout.call:8.2f}  {rollout.hub_jobs:8d}  "
                f"{rollout.hub_most:7d}  {rollout.hub_own:13.1f}  {rollout.hub_busy:7.1f}  "
                f"{rollout.hub_gaps:7.1f}"
            )
        job_med = statistics.median(j.wall for j, _ in mine)
        roll_med = statistics.median(r.wall for _, r in mine)
        ratio = roll_med / job_med
        print(
            f"  median: job {job_med:.2f} s, rollout {roll_med:.2f} s, ratio {ratio:.2f}x "
            f"(goal <= 1.3x: {'met' if ratio <= 1.3 else 'NOT met'})"
        )
        peak = max(max(r.rss) for _, r in mine)
        steady = statistics.median(
            statistics.median(r.rss[len(r.rss) // 2 :] or r.rss) for _, r in mine
        )
        print(
            f"  agent VmRSS during the rollouts: peak {peak:.1f} MB, steady {steady:.1f} MB "
            f"(VmHWM at the end {max(r.hwm for _, r in mine):.1f} MB)"
        )
    print(
        "  (Start: the StartRollout call, which resolves the target; at once: the most of the "
        "rollout's hub jobs queued or running together; their time: the hub jobs' own times, "
        "created -> ended, summed; busy: time with one or more of them on the hub; idle: from "
        "the first one's creation to the last one's end with none of them on the hub: the "
        "agent noticing an end, judging a wave, admitting the next)"
    )


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


async def main(args: argparse.Namespace) -> None:
    print(__doc__.split("Run:")[0].strip(), flush=True)
    print(f"\n(load average at the start: {_load()})")
    results = await run(args)
    report(results, args)
    print(f"(load average at the end: {_load()})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000, help="devices targeted")
    parser.add_argument("--rounds", type=int, default=2, help="job + rollout pairs")
    parser.add_argument("--poll", type=float, default=0.1, help="rollouts.poll_interval, s")
    parser.add_argument("--watch", type=float, default=0.1, help="GetJob/GetRollout poll, s")
    parser.add_argument("--wave", type=int, default=WAVE, help="waveSize (growthFactor 1)")
    parser.add_argument(
        "--tier", choices=["S1", "S2", "S3"], default=None, help="the emulator's and agent's tier"
    )
    parser.add_argument(
        "--units", type=int, default=1, help="with --tier: the hub's units (S3: 50/s each)"
    )
    parser.add_argument(
        "--agent-tiers",
        default="",
        help="comma-separated agent tiers (one agent each on the one hub, interleaved), "
        "e.g. S1,S3; default: --tier, else S1",
    )
    parser.add_argument("--no-plan", action="store_true", help="skip bench_rollout_plan")
    args = parser.parse_args()
    if args.devices < 1 or args.rounds < 1:
        parser.error("--devices and --rounds: 1 or more")
    asyncio.run(main(args))
    if not args.no_plan:
        print("\n=== planning (bench_rollout_plan) ===", flush=True)
        bench_rollout_plan.main(["--devices", str(args.devices)])
