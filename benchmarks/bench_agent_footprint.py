"""Benchmark: the agent's footprint as an operator measures it: start-up, memory, reconnect.

Method. Three processes on 127.0.0.1, each started by this one: the IoT Hub emulator (``python
-m emulator.iothub --devices N --no-fleet``, N the largest ``--things``, fresh data directory,
free ports), the ThingWorx stand-in (``python -m emulator.thingworx --port P``, app key in
``$THINGWORX_APP_KEY``) and the agent as an operator runs it: ``.venv/bin/jobs-agent run``,
configured by environment variables only (its working directory is an empty folder, so no
``config/agent.toml`` is read): ``thingworx.url``/``app_key``, ``iothub.connection_string``/
``ca_file`` (from the emulator's ``hub.json``), ``thingworx.auto_bind`` = device-0001..device-N,
``health.port`` a free port, ``log.level`` WARNING, ``jobs.wrappers_dir`` the repository's
``config/wrappers`` (the shipped wrapper services on every Thing, as in a deployment), and
``thingworx.reconnect_initial_delay``/``reconnect_max_delay`` set explicitly to the defaults of
agent/settings.py (printed below). For each N of ``--things`` (1, 100, 1,000 Things besides the
gateway), with a fresh stand-in and agent:

1. start-up: wall time from spawning the agent to ``GET /healthz`` answering 200 (polled every
   20 ms, so a figure is up to ~20 ms late); also the first answer of any status (the health
   server listens once the settings, wrappers and services are built; 503 until the channel is
   bound and the first IoT Hub probe has answered), and "settled": after a BIND the stand-in
   calls ``NotifyPropertyUpdate`` then ``GetMetadata`` on every bound Thing (its choice; real
   ThingWorx probably calls GetMetadata only when someone browses a Thing), which the agent
   answers while already healthy; settled is when ``/metrics`` counts N + 1 GetMetadata calls;
2. memory: ``VmRSS`` and the peak ``VmHWM`` (and ``Threads``) from ``/proc/PID/status`` at the
   first 200 and once settled; after ``--calls`` sequential ``AzureIotDeviceJobGetJob`` calls
   through the stand-in's REST convention (``POST
   /Thingworx/Things/AzureIotHub/Services/AzureIotDeviceJobGetJob``, header ``appKey``, aiohttp
   keep-alive) on a twin job created once through ``AzureIotDeviceJobScheduleTwinUpdateJob`` and
   left to complete (not timed); after ``--concurrent`` more calls from ``--callers`` concurrent
   callers; and after ``--calls`` sequential calls more (growth between the two sequential rounds
   is what repeated calls keep, not warm-up);
3. shutdown: SIGTERM to exit (unbind, close), after everything else.

Reconnect, on the agent with the largest N (before its shutdown), ``--reconnects`` times each
for SIGTERM (the stand-in closes the websockets with 1001) and SIGKILL (the kernel closes them) of
the stand-in: wait for it to exit and for ``/healthz`` to stop answering 200, start a new
stand-in on the same port with the same app key, and time from its ``ready`` line to ``/healthz``
answering 200 again (polled every 20 ms), to settled (as above), and from the signal to the 200
(the outage); the connection attempts it took are read from ``/metrics``
(``jobs_agent_connection_attempts_total``); one GetJob call through the new stand-in then checks
the Things are served again; the agent's memory is read after the last restart. The backoff is
full jitter (``uniform(0, min(max, initial * 2**failures))`` before each attempt), so the
reconnect time is random: with the default 1 s initial delay and a stand-in back in ~0.3 s, it is
mostly the first or second delay (ceilings 1 s and 2 s) plus the AUTH and BIND (~50 ms for 1,001
Things).

Run: ``python -m benchmarks.bench_agent_footprint [--things 1,100,1000] [--calls 2000]
[--concurrent 200] [--callers 50] [--reconnects 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from agent.settings import ThingWorxSettings

APP_KEY = "footprint-app-key"
GATEWAY = "AzureIotHub"
JOB_ID = "footprint-job"
_ROOT = Path(__file__).resolve().parents[1]
_POLL = 0.02
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 10.0
_RECONNECT_TIMEOUT = 120.0

Status = dict[str, float]


def _default(name: str) -> float:
    value = ThingWorxSettings.model_fields[name].default
    assert isinstance(value, float)
    return value


RECONNECT_INITIAL = _default("reconnect_initial_delay")
RECONNECT_MAX = _default("reconnect_max_delay")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _status(pid: int) -> Status:
    """``VmRSS`` and ``VmHWM`` (MB) and ``Threads`` of a process, from /proc."""
    values: Status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024
        elif name == "Threads":
            values[name] = int(rest)
    return values


def _agent_command() -> str:
    beside = Path(sys.executable).with_name("jobs-agent")
    found = str(beside) if beside.is_file() else shutil.which("jobs-agent")
    if not found:
        raise SystemExit("jobs-agent not found: run with the project's .venv/bin/python")
    return found


# -- processes ------------------------------------------------------------------------------------


@dataclass
class Child:
    """A process this benchmark started."""

    name: str
    proc: asyncio.subprocess.Process
    drain: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    async def stop(self, sig: int = signal.SIGTERM) -> float:
        """Send ``sig``, wait for the exit (SIGKILL after 10 s); the seconds it took."""
        started = time.perf_counter()
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                async with asyncio.timeout(_STOP_TIMEOUT):
                    await self.proc.wait()
            except TimeoutError:
                print(f"  ({self.name} did not exit within {_STOP_TIMEOUT:g} s: killed)")
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        if self.drain is not None:
            self.drain.cancel()
            await asyncio.gather(self.drain, return_exceptions=True)
        return time.perf_counter() - started


@dataclass
class Children:
    """Every process started, so that all are stopped whatever happens."""

    tmp: Path
    started: list[Child] = field(default_factory=list)

    async def python(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> tuple[Child, str, float]:
        """Start ``python -m ARGS`` and wait for its line starting with ``ready``.

        Returns:
            The process, its ready line, and the ``perf_counter`` time the line was read.
        """
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            *args,
            cwd=_ROOT,
            env={**os.environ, **(env or {})},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        child = Child(name, proc)
        self.started.append(child)
        assert proc.stdout is not None
        stdout = proc.stdout
        async with asyncio.timeout(_START_TIMEOUT):
            while True:
                line = (await stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"{name} exited before it was ready")
                if line.startswith("ready"):
                    ready_at = time.perf_counter()
                    break

        async def drain() -> None:  # a full pipe must never stall the child
            while await stdout.read(65536):
                pass

        child.drain = asyncio.create_task(drain())
        return child, line, ready_at

    async def agent(self, env: dict[str, str], label: str) -> tuple[Child, float]:
        """Start ``jobs-agent run`` with ``env`` on top of this environment minus any
        ``JOBS_AGENT_*``; its output goes to files. Returns it and its spawn time."""
        cwd = self.tmp / f"agent-{label}"
        cwd.mkdir()
        base = {k: v for k, v in os.environ.items() if not k.startswith("JOBS_AGENT_")}
        with (cwd / "stdout").open("wb") as out, (cwd / "stderr").open("wb") as err:
            started = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                _agent_command(),
                "run",
                cwd=cwd,
                env={**base, **env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        child = Child(f"agent ({label})", proc)
        self.started.append(child)
        return child, started

    async def close(self) -> None:
        for child in reversed(self.started):
            await child.stop()


def _tail(path: Path, lines: int = 5) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# -- measuring ------------------------------------------------------------------------------------


async def _healthz(http: aiohttp.ClientSession, url: str) -> int | None:
    """The status ``/healthz`` answers, or None when nothing answers."""
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as reply:
            await reply.read()
            return reply.status
    except (aiohttp.ClientError, TimeoutError):
        return None


async def _wait_health(
    http: aiohttp.ClientSession,
    url: str,
    agent: Child,
    timeout: float,
    want: Callable[[int | None], bool],
) -> tuple[float | None, float]:
    """Poll ``url`` every 20 ms until ``want(status)``.

    Returns:
        The ``perf_counter`` time of the first answer of any status (None if there was none
        before the wanted one) and of the wanted one.
    """
    deadline = time.perf_counter() + timeout
    first: float | None = None
    while True:
        if not agent.running:
            raise RuntimeError(f"{agent.name} exited with {agent.proc.returncode}")
        status = await _healthz(http, url)
        now = time.perf_counter()
        if status is not None and first is None:
            first = now
        if want(status):
            return first, now
        if now > deadline:
            raise TimeoutError(f"/healthz: still {status} after {timeout:g} s")
        await asyncio.sleep(_POLL)


async def _metric(http: aiohttp.ClientSession, metrics_url: str, series: str) -> int:
    """One counter of the agent's ``/metrics`` (0 when the series is not there yet)."""
    async with http.get(metrics_url) as reply:
        text = await reply.text()
    found = re.search(rf"^{re.escape(series)}\s+(\S+)", text, re.M)
    return int(float(found.group(1))) if found else 0


_ATTEMPTS = "jobs_agent_connection_attempts_total"
_METADATA = 'jobs_agent_service_calls_total{service="GetMetadata"}'


async def _wait_metadata(
    http: aiohttp.ClientSession, metrics_url: str, agent: Child, target: int, timeout: float
) -> float:
    """Poll ``/metrics`` every 20 ms until the agent has answered ``target`` GetMetadata calls
    in all (the stand-in's calls after a BIND); the ``perf_counter`` time it did."""
    deadline = time.perf_counter() + timeout
    while True:
        if not agent.running:
            raise RuntimeError(f"{agent.name} exited with {agent.proc.returncode}")
        count = await _metric(http, metrics_url, _METADATA)
        now = time.perf_counter()
        if count >= target:
            return now
        if now > deadline:
            raise TimeoutError(f"GetMetadata answered {count} times, not {target}")
        await asyncio.sleep(_POLL)


class CallFailed(Exception):
    """A service call through the stand-in did not answer 200."""


class Rest:
    """ThingWorx's REST convention on the stand-in: one Thing's services."""

    def __init__(self, http: aiohttp.ClientSession, rest_url: str) -> None:
        self.http = http
        self.rest_url = rest_url

    async def call(self, service: str, inputs: dict[str, Any], thing: str = GATEWAY) -> Any:
        url = f"{self.rest_url}/Things/{thing}/Services/{service}"
        async with self.http.post(url, json=inputs, headers={"appKey": APP_KEY}) as reply:
            if reply.status != 200:
                raise CallFailed(f"{service}: {reply.status} {(await reply.text()).strip()}")
            return await reply.json()

    async def get_job(self) -> Any:
        return await self.call("AzureIotDeviceJobGetJob", {"jobId": JOB_ID})


async def _ensure_job(rest: Rest) -> None:
    """Create the twin job GetJob reads (once per hub) and wait for it to complete."""
    try:
        await rest.call(
            "AzureIotDeviceJobScheduleTwinUpdateJob",
            {"jobId": JOB_ID, "patch": {"tags": {"b": 1}},
             "queryCondition": "deviceId = 'device-0001'"},
        )  # fmt: skip
    except CallFailed as exc:  # 409 JobAlreadyExists for every agent but the first
        if "JobAlreadyExists" not in str(exc):
            raise
    deadline = time.monotonic() + 30
    while (await rest.get_job())["rows"][0]["status"] != "completed":
        assert time.monotonic() < deadline, "the benchmark job did not complete"
        await asyncio.sleep(0.1)


async def _sequential(call: Callable[[], Awaitable[object]], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await call()
    return time.perf_counter() - started


async def _concurrent(call: Callable[[], Awaitable[object]], n: int, callers: int) -> float:
    left = [n]

    async def caller() -> None:
        while left[0] > 0:
            left[0] -= 1
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return time.perf_counter() - started


@dataclass
class Footprint:
    """One agent's figures (times in s from the spawn, memory in MB)."""

    things: int
    first_answer: float = 0.0
    healthy: float = 0.0
    settled: float = 0.0
    at_200: Status = field(default_factory=dict)
    ready: Status = field(default_factory=dict)
    after_seq: Status = field(default_factory=dict)
    after_conc: Status = field(default_factory=dict)
    after_seq2: Status = field(default_factory=dict)
    after_restarts: Status = field(default_factory=dict)
    seq_s: float = 0.0
    conc_s: float = 0.0
    shutdown_s: float = 0.0
    exit_code: int | None = None
    stderr: list[str] = field(default_factory=list)


@dataclass
class Reconnect:
    """One stand-in restart, as the agent lived through it (times in s)."""

    how: str
    stop_s: float
    gap_s: float
    ready_to_200: float
    ready_to_settled: float
    outage: float
    attempts: int


@dataclass
class Agent:
    """A running agent and where to reach it."""

    child: Child
    things: int
    health_url: str
    metrics_url: str
    rest: Rest
    standin: Child
    standin_port: int


async def _standin(children: Children, port: int) -> tuple[Child, str, float]:
    return await children.python(
        "stand-in",
        ["emulator.thingworx", "--port", str(port), "--log-level", "WARNING"],
        {"THINGWORX_APP_KEY": APP_KEY},
    )


async def _reconnect(
    children: Children, http: aiohttp.ClientSession, agent: Agent, sig: signal.Signals
) -> Reconnect:
    """Stop the stand-in with ``sig``, start a new one on the same port, time the agent's
    return (``agent.standin`` becomes the new one)."""
    attempts = await _metric(http, agent.metrics_url, _ATTEMPTS)
    metadata = await _metric(http, agent.metrics_url, _METADATA)
    stopped = time.perf_counter()
    stop_s = await agent.standin.stop(sig)
    await _wait_health(http, agent.health_url, agent.child, 10.0, lambda status: status != 200)
    gap_started = time.perf_counter()
    agent.standin, _, ready_at = await _standin(children, agent.standin_port)
    _, healthy = await _wait_health(
        http, agent.health_url, agent.child, _RECONNECT_TIMEOUT, lambda status: status == 200
    )
    attempts = await _metric(http, agent.metrics_url, _ATTEMPTS) - attempts
    settled = await _wait_metadata(
        http, agent.metrics_url, agent.child, metadata + agent.things + 1, _RECONNECT_TIMEOUT
    )
    await agent.rest.get_job()  # the Things are served again
    return Reconnect(
        sig.name,
        stop_s,
        ready_at - gap_started,
        healthy - ready_at,
        settled - ready_at,
        healthy - stopped,
        attempts,
    )


async def _start_agent(
    children: Children,
    http: aiohttp.ClientSession,
    hub: dict[str, Any],
    n: int,
    label: str,
    extra_env: dict[str, str] | None = None,
) -> tuple[Agent, Footprint]:
    """A fresh stand-in and an agent with ``n`` device Things (``extra_env`` on top of the
    environment below); time the agent's start."""
    standin, line, _ = await _standin(children, 0)
    ws_url = line.split()[1]
    health_port = _free_port()
    env = {
        "JOBS_AGENT_THINGWORX__URL": ws_url,
        "JOBS_AGENT_THINGWORX__APP_KEY": APP_KEY,
        "JOBS_AGENT_THINGWORX__AUTO_BIND": json.dumps([f"device-{i:04d}" for i in range(1, n + 1)]),
        "JOBS_AGENT_THINGWORX__RECONNECT_INITIAL_DELAY": str(RECONNECT_INITIAL),
        "JOBS_AGENT_THINGWORX__RECONNECT_MAX_DELAY": str(RECONNECT_MAX),
        "JOBS_AGENT_IOTHUB__CONNECTION_STRING": hub["ownerConnectionString"],
        "JOBS_AGENT_IOTHUB__CA_FILE": hub["caPem"],
        "JOBS_AGENT_HEALTH__PORT": str(health_port),
        "JOBS_AGENT_LOG__LEVEL": "WARNING",
        "JOBS_AGENT_JOBS__WRAPPERS_DIR": str(_ROOT / "config" / "wrappers"),
        **(extra_env or {}),
    }
    child, spawned = await children.agent(env, label)
    health = f"http://127.0.0.1:{health_port}"
    rest = Rest(http, ws_url.replace("ws://", "http://").removesuffix("/WS"))
    agent = Agent(
        child,
        n,
        f"{health}/healthz",
        f"{health}/metrics",
        rest,
        standin,
        int(ws_url.split(":")[2].split("/")[0]),
    )
    figures = Footprint(n)
    try:
        first, healthy = await _wait_health(
            http, agent.health_url, child, _START_TIMEOUT, lambda status: status == 200
        )
        figures.at_200 = _status(child.proc.pid)
        settled = await _wait_metadata(http, agent.metrics_url, child, n + 1, _START_TIMEOUT)
        figures.ready = _status(child.proc.pid)
    except Exception:
        print(_tail(children.tmp / f"agent-{label}" / "stderr"), file=sys.stderr)
        raise
    figures.first_answer = (first or healthy) - spawned
    figures.healthy = healthy - spawned
    figures.settled = settled - spawned
    return agent, figures


async def run(
    things: list[int], calls: int, concurrent: int, callers: int, reconnects: int
) -> tuple[list[Footprint], list[Reconnect]]:
    """Every figure (see the module docstring)."""
    footprints: list[Footprint] = []
    restarts: list[Reconnect] = []
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp_name:
        tmp = Path(tmp_name)
        children = Children(tmp)
        try:
            data = tmp / "hub"
            await children.python(
                "emulator",
                [
                    *("emulator.iothub", "--data-dir", str(data), "--rest-port", "0"),
                    *("--mqtt-port", "0", "--devices", str(max(things)), "--no-fleet"),
                ],
            )
            hub = json.loads((data / "hub.json").read_text())
            timeout = aiohttp.ClientTimeout(total=60)
            connector = aiohttp.TCPConnector(limit=max(100, callers * 2))
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
                for index, n in enumerate(things):
                    label = f"{index}-{n}"
                    agent, figures = await _start_agent(children, http, hub, n, label)
                    pid = agent.child.proc.pid
                    await _ensure_job(agent.rest)
                    figures.seq_s = await _sequential(agent.rest.get_job, calls)
                    figures.after_seq = _status(pid)
                    figures.conc_s = await _concurrent(agent.rest.get_job, concurrent, callers)
                    figures.after_conc = _status(pid)
                    await _sequential(agent.rest.get_job, calls)
                    figures.after_seq2 = _status(pid)
                    if index == len(things) - 1:
                        for sig in (signal.SIGTERM, signal.SIGKILL):
                            for _ in range(reconnects):
                                restarts.append(await _reconnect(children, http, agent, sig))
                        figures.after_restarts = _status(pid)
                    figures.shutdown_s = await agent.child.stop()
                    figures.exit_code = agent.child.proc.returncode
                    stderr = (tmp / f"agent-{label}" / "stderr").read_text(errors="replace")
                    figures.stderr = stderr.splitlines()
                    await agent.standin.stop()
                    footprints.append(figures)
        finally:
            await children.close()
    return footprints, restarts


def _expected(line: str) -> bool:
    """A log line the stand-in restarts cause (``link lost``, ``link failed`` warnings)."""
    with contextlib.suppress(ValueError, AttributeError):
        return json.loads(line).get("event") in ("link lost", "link failed")
    return False


def report(
    footprints: list[Footprint],
    restarts: list[Reconnect],
    calls: int,
    concurrent: int,
    callers: int,
) -> None:
    """Print the figures."""
    print(
        f"\nreconnect settings (the defaults of agent/settings.py, set explicitly): "
        f"JOBS_AGENT_THINGWORX__RECONNECT_INITIAL_DELAY={RECONNECT_INITIAL:g}, "
        f"JOBS_AGENT_THINGWORX__RECONNECT_MAX_DELAY={RECONNECT_MAX:g}"
    )
    print("\nstart-up, s from spawning jobs-agent; shutdown, s from SIGTERM to exit")
    print(f"  {'Things':>6s}  {'1st answer':>10s}  {'200':>6s}  {'settled':>7s}  {'stop':>5s}")
    for f in footprints:
        print(
            f"  {f.things:6d}  {f.first_answer:10.2f}  {f.healthy:6.2f}  {f.settled:7.2f}  "
            f"{f.shutdown_s:5.2f}"
        )
    print(
        "  (Things: device Things besides the gateway; 1st answer: /healthz answered at all; "
        "200: /healthz 200; settled: the stand-in's post-BIND GetMetadata calls all answered)"
    )
    print("\nmemory, MB (VmRSS; peak VmHWM) and threads of the agent process")
    print(
        f"  {'Things':>6s}  {'RSS 200':>7s}  {'settled':>7s}  {'HWM':>5s}  {'thr':>3s}  "
        f"{'+seq':>5s}  {'+conc':>5s}  {'HWM':>5s}  {'thr':>3s}  {'+seq2':>5s}  {'HWM':>5s}  "
        f"{'seq/call':>8s}  {'conc/s':>6s}"
    )
    for f in footprints:
        print(
            f"  {f.things:6d}  {f.at_200['VmRSS']:7.1f}  {f.ready['VmRSS']:7.1f}  "
            f"{f.ready['VmHWM']:5.1f}  {f.ready['Threads']:3.0f}  {f.after_seq['VmRSS']:5.1f}  "
            f"{f.after_conc['VmRSS']:5.1f}  {f.after_conc['VmHWM']:5.1f}  "
            f"{f.after_conc['Threads']:3.0f}  {f.after_seq2['VmRSS']:5.1f}  "
            f"{f.after_seq2['VmHWM']:5.1f}  {f.seq_s / calls * 1000:6.2f}ms  "
            f"{concurrent / f.conc_s:6.0f}"
        )
    print(
        f"  (RSS 200: at the first /healthz 200; settled: once settled, with its HWM and threads; "
        f"+seq: after {calls} sequential GetJob calls; +conc: after {concurrent} more from "
        f"{callers} callers, with the HWM and threads then; +seq2: after {calls} sequential calls "
        f"more, with the HWM; seq/call, conc/s: the first {calls} and the {concurrent} calls' "
        f"mean time and rate)"
    )
    for f in footprints:
        others = [line for line in f.stderr if not _expected(line)]
        if f.exit_code != 0 or others:
            print(f"  agent with {f.things} Things: exit {f.exit_code}; its stderr:")
            for line in others[:6]:
                print(f"    {line[:300]}")
            if len(others) > 6:
                print(f"    ... {len(others) - 6} more lines")
    if restarts:
        things = footprints[-1].things if footprints else 0
        print(f"\nreconnect of the agent with {things} Things to a restarted stand-in, s")
        after = footprints[-1].after_restarts if footprints else {}
        if after:
            print(
                f"  agent after the {len(restarts)} restarts: VmRSS {after['VmRSS']:.1f} MB, "
                f"VmHWM {after['VmHWM']:.1f} MB, {after['Threads']:.0f} threads"
            )
        print(
            f"  {'signal':7s}  {'exit':>5s}  {'restart':>7s}  {'ready->200':>10s}  "
            f"{'settled':>7s}  {'outage':>6s}  {'attempts':>8s}"
        )
        for r in restarts:
            print(
                f"  {r.how:7s}  {r.stop_s:5.2f}  {r.gap_s:7.2f}  {r.ready_to_200:10.2f}  "
                f"{r.ready_to_settled:7.2f}  {r.outage:6.2f}  {r.attempts:8d}"
            )
        for how in ("SIGTERM", "SIGKILL"):
            mine = [r.ready_to_200 for r in restarts if r.how == how]
            if mine:
                print(
                    f"  {how}: ready->200 median {statistics.median(mine):.2f} s "
                    f"(min {min(mine):.2f}, max {max(mine):.2f}, {len(mine)} restarts)"
                )
        print(
            "  (exit: signal to the old stand-in's exit; restart: new stand-in spawned -> its "
            "ready line; ready->200: that line -> /healthz 200; settled: that line -> the new "
            "stand-in's GetMetadata calls all answered; outage: signal -> /healthz 200; "
            "attempts: websocket connections the agent tried)"
        )


async def main(
    things: list[int], calls: int, concurrent: int, callers: int, reconnects: int
) -> None:
    print(__doc__.split("Run:")[0].strip(), flush=True)
    started = time.perf_counter()
    footprints, restarts = await run(things, calls, concurrent, callers, reconnects)
    report(footprints, restarts, calls, concurrent, callers)
    print(f"\n(whole run {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--things", default="1,100,1000", help="device Things, comma-separated")
    parser.add_argument("--calls", type=int, default=2000, help="sequential GetJob calls")
    parser.add_argument("--concurrent", type=int, default=200, help="concurrent GetJob calls")
    parser.add_argument("--callers", type=int, default=50, help="concurrent callers")
    parser.add_argument("--reconnects", type=int, default=5, help="restarts per signal")
    args = parser.parse_args()
    counts = [int(t) for t in args.things.split(",")]
    if not counts or min(counts) < 1:
        parser.error("--things: one or more counts of at least 1")
    asyncio.run(main(counts, args.calls, args.concurrent, args.callers, args.reconnects))
