"""Benchmark: the agent under heavy callers and slow devices (issue 16).

Method. Three processes on 127.0.0.1, each started by this one (the plumbing of
:mod:`benchmarks.bench_agent_footprint`): the IoT Hub emulator (``python -m emulator.iothub
--devices N --offline-share 0.5``: a simulated fleet over MQTT/TLS with half the devices offline,
no job quotas, fresh data directory, free ports), the ThingWorx stand-in (``python -m
emulator.thingworx``, call timeout 120 s) and the agent as an operator runs it (``jobs-agent
run``, configured by environment variables only; default ``[iothub]`` lanes: 8 hub threads,
256 may wait, 32 direct calls; every device bound as a Thing; log level WARNING). Before the
runs: which devices are offline is read by calling each device Thing's ``Reboot`` once with
``connectTimeoutInSeconds=0`` (404 = offline), and ``--jobs`` twin jobs are created through the
agent (a hub with history).

1. Heavy callers: for each of ``--callers`` (50, 200), that many concurrent REST callers
   (aiohttp keep-alive, through the stand-in's ThingWorx REST convention) for ``--duration``
   seconds, each picking the next call from a fixed, realistic mix (weights in :data:`MIX`):
   GetJob of a known job, FindJobs with the filters that exist (``type`` and ``status``: FindJobs
   has no paging yet, that is another issue; an unfiltered FindJobs over the whole history is
   what the per-call bound ``iothub.max_rows_per_call`` refuses), QueryJobResults (``maxRows``
   20) of a known job, ScheduleTwinUpdateJob on one device, and a direct ``Reboot`` of an online
   device. Printed: calls/s, answers by HTTP status, p50/p99 per service, and ``VmRSS`` of each
   process before, during (the largest of one-second samples) and after.
2. Head-of-line: GetJob latency (``--getjob`` sequential calls, p50/p99) with 0, 8 and 32 direct
   calls to offline devices in flight (``Reboot`` with ``connectTimeoutInSeconds`` 20 on the
   offline device Things, waited for until the agent's ``/metrics`` shows them in the device
   lane), and the time to refuse one direct call more than ``iothub.device_calls`` (32).

Run: ``python -m benchmarks.bench_load [--callers 50,200] [--duration 30] [--devices 40]
[--jobs 300] [--getjob 50]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import random
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.bench_agent_footprint import (
    APP_KEY,
    Child,
    Children,
    _free_port,
    _metric,
    _status,
    _wait_health,
)

GATEWAY = "AzureIotHub"
GET = "AzureIotDeviceJobGetJob"
FIND = "AzureIotDeviceJobFindJobs"
RESULTS = "AzureIotDeviceJobQueryJobResults"
TWIN = "AzureIotDeviceJobScheduleTwinUpdateJob"
REBOOT = "Reboot"
MIX: list[tuple[str, int]] = [(GET, 50), (FIND, 15), (RESULTS, 15), (TWIN, 5), (REBOOT, 15)]
"""(service, weight): mashups poll GetJob most, list and read results, schedule now and then."""
SLOW_CONNECT = 20
WRAPPERS = str(Path(__file__).resolve().parents[1] / "config" / "wrappers")
_DEVICE_BUSY = 'jobs_agent_lane_busy{lane="device"}'


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass
class Setup:
    """What the runs need: the REST root, a known job, device Things by state, processes."""

    rest_url: str
    metrics_url: str
    job_id: str
    online: list[str]
    offline: list[str]
    processes: dict[str, Child]


@dataclass
class LoadRun:
    callers: int
    duration: float
    calls: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    rss: dict[str, dict[str, float]] = field(default_factory=dict)


async def _call(
    http: aiohttp.ClientSession, rest_url: str, thing: str, service: str, inputs: dict[str, Any]
) -> tuple[int, Any]:
    url = f"{rest_url}/Things/{thing}/Services/{service}"
    async with http.post(url, json=inputs, headers={"appKey": APP_KEY}) as reply:
        body = await reply.json() if reply.status == 200 else (await reply.text()).strip()
        return reply.status, body


def _rss(processes: dict[str, Child]) -> dict[str, float]:
    return {name: _status(child.proc.pid)["VmRSS"] for name, child in processes.items()}


async def _prepare(
    children: Children, http: aiohttp.ClientSession, tmp: Path, devices: int, jobs: int
) -> Setup:
    data = tmp / "hub"
    emulator, _, _ = await children.python(
        "emulator",
        [
            *("emulator.iothub", "--data-dir", str(data), "--rest-port", "0"),
            *("--mqtt-port", "0", "--devices", str(devices), "--offline-share", "0.5"),
        ],
    )
    hub = json.loads((data / "hub.json").read_text())
    standin, line, _ = await children.python(
        "stand-in",
        ["emulator.thingworx", "--port", "0", "--log-level", "WARNING", "--call-timeout", "120"],
        {"THINGWORX_APP_KEY": APP_KEY},
    )
    ws_url = line.split()[1]
    health_port = _free_port()
    things = [f"device-{i:04d}" for i in range(1, devices + 1)]
    env = {
        "JOBS_AGENT_THINGWORX__URL": ws_url,
        "JOBS_AGENT_THINGWORX__APP_KEY": APP_KEY,
        "JOBS_AGENT_THINGWORX__AUTO_BIND": json.dumps(things),
        "JOBS_AGENT_IOTHUB__CONNECTION_STRING": hub["ownerConnectionString"],
        "JOBS_AGENT_IOTHUB__CA_FILE": hub["caPem"],
        "JOBS_AGENT_HEALTH__PORT": str(health_port),
        "JOBS_AGENT_LOG__LEVEL": "WARNING",
        "JOBS_AGENT_JOBS__WRAPPERS_DIR": WRAPPERS,
    }
    agent, _ = await children.agent(env, "load")
    health = f"http://127.0.0.1:{health_port}"
    await _wait_health(http, f"{health}/healthz", agent, 60.0, lambda status: status == 200)
    rest_url = ws_url.replace("ws://", "http://").removesuffix("/WS")
    await asyncio.sleep(2.0)  # the stand-in's GetMetadata calls after the BIND
    online: list[str] = []
    offline: list[str] = []
    for thing in things:
        status, _ = await _call(http, rest_url, thing, REBOOT, {"connectTimeoutInSeconds": 0})
        (online if status == 200 else offline).append(thing)
    job_id = "load-0"
    for n in range(jobs):
        status, body = await _call(
            http,
            rest_url,
            GATEWAY,
            TWIN,
            {"jobId": f"load-{n}", "patch": {"tags": {"n": n}},
             "queryCondition": f"deviceId = '{online[n % len(online)]}'"},
        )  # fmt: skip
        assert status == 200, body
    return Setup(
        rest_url,
        f"{health}/metrics",
        job_id,
        online,
        offline,
        {"agent": agent, "stand-in": standin, "emulator": emulator},
    )


def _next_call(rng: random.Random, setup: Setup) -> tuple[str, str, dict[str, Any]]:
    service = rng.choices([s for s, _ in MIX], [w for _, w in MIX])[0]
    if service == GET:
        return GATEWAY, GET, {"jobId": setup.job_id}
    if service == FIND:
        return GATEWAY, FIND, rng.choice(
            [{"type": "twinUpdate", "status": "running"}, {"type": "deviceMethod"},
             {"status": "failed"}]
        )  # fmt: skip
    if service == RESULTS:
        query = f"SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '{setup.job_id}'"
        return GATEWAY, RESULTS, {"query": query, "maxRows": 20}
    device = rng.choice(setup.online)
    if service == TWIN:
        patch = {"properties": {"desired": {"interval": rng.randint(1, 60)}}}
        return GATEWAY, TWIN, {"patch": patch, "queryCondition": f"deviceId = '{device}'"}
    return device, REBOOT, {"connectTimeoutInSeconds": 5}


async def _load(http: aiohttp.ClientSession, setup: Setup, callers: int, seconds: float) -> LoadRun:
    run = LoadRun(callers, seconds)
    run.rss["before"] = _rss(setup.processes)
    peak: dict[str, float] = dict.fromkeys(setup.processes, 0.0)
    stop_at = time.perf_counter() + seconds

    async def caller(seed: int) -> None:
        rng = random.Random(seed)
        while time.perf_counter() < stop_at:
            thing, service, inputs = _next_call(rng, setup)
            started = time.perf_counter()
            try:
                status, _ = await _call(http, setup.rest_url, thing, service, inputs)
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            run.latencies[service].append(time.perf_counter() - started)
            run.statuses[status] += 1
            run.calls += 1

    async def sampler() -> None:
        while time.perf_counter() < stop_at:
            for name, value in _rss(setup.processes).items():
                peak[name] = max(peak[name], value)
            await asyncio.sleep(1.0)

    started = time.perf_counter()
    await asyncio.gather(sampler(), *(caller(n) for n in range(callers)))
    run.duration = time.perf_counter() - started
    run.rss["during (peak)"] = peak
    await asyncio.sleep(2.0)
    run.rss["after"] = _rss(setup.processes)
    return run


async def _head_of_line(
    http: aiohttp.ClientSession, setup: Setup, sequential: int
) -> list[tuple[int, float, float, str]]:
    """GetJob p50/p99 with 0, 8 and 32 slow direct calls in flight; and the 33rd's refusal."""
    rows = []
    for slow in (0, 8, 32):
        held = [
            asyncio.create_task(
                _call(
                    http,
                    setup.rest_url,
                    setup.offline[i % len(setup.offline)],
                    REBOOT,
                    {"connectTimeoutInSeconds": SLOW_CONNECT},
                )
            )
            for i in range(slow)
        ]
        deadline = time.monotonic() + 10
        while await _metric(http, setup.metrics_url, _DEVICE_BUSY) < slow:
            assert time.monotonic() < deadline, "the slow calls never reached the device lane"
            await asyncio.sleep(0.05)
        times = []
        for _ in range(sequential):
            started = time.perf_counter()
            status, body = await _call(http, setup.rest_url, GATEWAY, GET, {"jobId": setup.job_id})
            assert status == 200, body
            times.append(time.perf_counter() - started)
        note = ""
        if slow == 32:
            started = time.perf_counter()
            status, body = await _call(
                http, setup.rest_url, setup.offline[0], REBOOT,
                {"connectTimeoutInSeconds": SLOW_CONNECT},
            )  # fmt: skip
            took = 1000 * (time.perf_counter() - started)
            note = f"33rd direct call: HTTP {status} after {took:.0f} ms: {body}"
        rows.append((slow, _pct(times, 0.5), _pct(times, 0.99), note))
        await asyncio.gather(*held)
    return rows


def report(runs: list[LoadRun], hol: list[tuple[int, float, float, str]], setup: Setup) -> None:
    print(f"machine: {platform.machine()}, Python {platform.python_version()}, "
          f"{len(setup.online)} online + {len(setup.offline)} offline devices")  # fmt: skip
    for run in runs:
        rate = run.calls / run.duration
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(run.statuses.items()))
        head = f"{run.callers} callers, {run.duration:.0f} s: {run.calls} calls"
        print(f"\n{head}, {rate:.0f} calls/s; HTTP statuses {statuses}")
        print(f"  {'service':<42} {'calls':>6} {'p50 ms':>8} {'p99 ms':>8}")
        for service, values in sorted(run.latencies.items()):
            print(f"  {service:<42} {len(values):>6} {1000 * statistics.median(values):>8.1f} "
                  f"{1000 * _pct(values, 0.99):>8.1f}")  # fmt: skip
        for when, rss in run.rss.items():
            cells = ", ".join(f"{name} {mb:.0f} MB" for name, mb in rss.items())
            print(f"  RSS {when}: {cells}")
    print("\nhead-of-line: GetJob latency with slow direct calls (offline devices) in flight")
    for slow, p50, p99, note in hol:
        print(f"  {slow:>2} in flight: p50 {1000 * p50:.1f} ms, p99 {1000 * p99:.1f} ms")
        if note:
            print(f"  {note}")


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp_name:
        children = Children(Path(tmp_name))
        timeout = aiohttp.ClientTimeout(total=120)
        connector = aiohttp.TCPConnector(limit=1000)
        try:
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
                setup = await _prepare(children, http, Path(tmp_name), args.devices, args.jobs)
                runs = [await _load(http, setup, n, args.duration) for n in args.callers]
                hol = await _head_of_line(http, setup, args.getjob)
            report(runs, hol, setup)
        finally:
            with contextlib.suppress(Exception):
                await children.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", type=lambda s: [int(x) for x in s.split(",")],
                        default=[50, 200], help="concurrent callers per run (50,200)")  # fmt: skip
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per run")
    parser.add_argument("--devices", type=int, default=40, help="devices (half offline)")
    parser.add_argument("--jobs", type=int, default=300, help="twin jobs created before")
    parser.add_argument("--getjob", type=int, default=50, help="GetJob calls per HOL case")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
