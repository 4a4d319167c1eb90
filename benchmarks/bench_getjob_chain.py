"""Benchmark: AzureIotDeviceJobGetJob through the whole chain vs the SDK's own get_scheduled_job.

Method. Two layouts, each measured the same way:

- ``processes`` (the deployment's shape): the IoT Hub emulator (``python -m emulator.iothub``,
  HTTPS REST and MQTT on free ports, 1 device, no fleet), the ThingWorx stand-in (``python -m
  emulator.thingworx``) and the agent (``python -m benchmarks.chain_agent``: ``AgentApp``, 16 IoT
  Hub workers) each in its own process; the measuring client alone in this one.
- ``one``: the same three, and the measuring client, in this process and one event loop (each
  hop's CPU competes with the emulator's and the client's).

In each layout one twin job is created through the chain and left to complete (not timed); then,
in ``--rounds`` interleaved rounds of ``--calls``/``--rounds`` sequential calls each:

- chain: ``POST /Thingworx/Things/AzureIotHub/Services/AzureIotDeviceJobGetJob`` (aiohttp,
  keep-alive) → stand-in → AlwaysOn → agent registry → IotHubClient worker thread → azure-iot-hub
  SDK (msrest/requests) → emulator;
- echo: the same REST path to ``BenchEcho``, a service that answers its input (stand-in, AlwaysOn
  and the agent's dispatch, no IoT Hub call);
- direct: ``IoTHubJobManager.get_scheduled_job`` from one worker thread of this process, twice:
  as the SDK comes (msrest closes its requests session after each call, so every call opens a
  new TCP+TLS connection) and with ``protocol.config.keep_alive = True`` (one connection reused).
  The keep-alive one is the bar: it is the best a direct SDK user gets. For comparison only,
  the keep-alive call is also timed alone right after an echo call (caches and idle CPUs as
  the chain's own hub call finds them), not back to back;
- agent: the agent's own time per chain call (AlwaysOn request in → answer out, from its
  channel stats) and ``IotHubClient.get_job`` timed inside the agent (worker hop + SDK call),
  both during the chain's calls and back to back.

Then throughput: ``--concurrency`` callers issuing GetJob through the chain back to back for
``--seconds`` s → calls/s and latency p50/p90; the same for the direct SDK (keep-alive) from as
many threads. Also the cost of a direct call's parts, in this process: SAS token signing, and a
plain ``requests`` GET of the same URL with the same headers on a kept-alive connection (so the
rest of the direct call is msrest's request building and model deserialisation).

Run: ``python -m benchmarks.bench_getjob_chain [--layout both|processes|one] [--calls 300]
[--rounds 6] [--concurrency 50] [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import requests
from azure.iot.hub import IoTHubJobManager
from azure.iot.hub.sastoken import SasToken

from benchmarks.chain_agent import (
    APP_KEY_ENV,
    CONNECTION_ENV,
    ECHO_SERVICE,
    GATEWAY,
    add_echo,
    sdk_latencies,
    time_get_job,
)
from logsetup import configure_logging
from tests.support.chain import AgentChain

JOB_ID = "bench-job"
APP_KEY = "bench-app-key"
_START_TIMEOUT = 30.0
_ROOT = Path(__file__).resolve().parents[1]

Latencies = list[float]


@dataclass
class Ends:
    """A running layout, as the measuring client sees it."""

    rest_url: str
    connection_string: str
    ca_pem: str
    agent_latencies: Callable[[int], Awaitable[Latencies]]
    agent_sdk: Callable[[int, str], Awaitable[Latencies]]
    agent_inner: Callable[[int], Awaitable[Latencies]]


def _quiet() -> None:
    import logging

    configure_logging("WARNING", "console")  # plain tracebacks, never the locals (issue 15)
    logging.basicConfig(level=logging.ERROR)


def _pct(values: Latencies, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- layouts --------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def one_process(tmp: Path) -> AsyncIterator[Ends]:
    """Hub, stand-in and agent in this process and event loop (tests/support's AgentChain)."""
    async with AgentChain(
        tmp, devices=1, fleet=False, mqtt_port=0, tier=None, prepare=add_echo, app_key=APP_KEY
    ) as chain:
        hub, standin, app = chain.hub, chain.standin, chain.app
        inner = time_get_job(app)

        async def latencies(n: int) -> Latencies:
            return list(app.channel.stats.latencies)[-n:]

        async def agent_sdk(n: int, job_id: str) -> Latencies:
            return await sdk_latencies(app, n, job_id)

        async def agent_inner(n: int) -> Latencies:
            return list(inner)[-n:]

        yield Ends(
            standin.rest_url,
            hub.owner_connection_string,
            str(hub.ca_pem_path),
            latencies,
            agent_sdk,
            agent_inner,
        )


async def _spawn(
    stack: contextlib.AsyncExitStack, args: list[str], env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, str]:
    """Start ``python -m ARGS`` and wait for its line starting with ``ready``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        *args,
        cwd=_ROOT,
        env={**os.environ, **(env or {})},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )

    async def stop() -> None:
        if proc.returncode is None:
            if args[0] == "benchmarks.chain_agent":
                assert proc.stdin is not None
                proc.stdin.close()
            else:
                proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()

    stack.push_async_callback(stop)
    assert proc.stdout is not None
    async with asyncio.timeout(_START_TIMEOUT):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise RuntimeError(f"{args[0]} exited before it was ready")
            if line.startswith("ready"):
                return proc, line


@contextlib.asynccontextmanager
async def separate_processes(tmp: Path) -> AsyncIterator[Ends]:
    """Hub, stand-in and agent each in its own process."""
    data = tmp / "hub"
    async with contextlib.AsyncExitStack() as stack:
        await _spawn(
            stack,
            [
                *("emulator.iothub", "--data-dir", str(data), "--rest-port", "0"),
                *("--mqtt-port", "0", "--devices", "1", "--no-fleet"),
            ],
        )
        hub = json.loads((data / "hub.json").read_text())
        _, line = await _spawn(
            stack,
            ["emulator.thingworx", "--port", "0", "--log-level", "WARNING"],
            {"THINGWORX_APP_KEY": APP_KEY},
        )
        ws_url = line.split()[1]
        agent, _ = await _spawn(
            stack,
            ["benchmarks.chain_agent", "--url", ws_url, "--ca-file", hub["caPem"]],
            {APP_KEY_ENV: APP_KEY, CONNECTION_ENV: hub["ownerConnectionString"]},
        )
        assert agent.stdin is not None and agent.stdout is not None
        stdin, stdout = agent.stdin, agent.stdout

        async def ask(command: str) -> Latencies:
            stdin.write(command.encode() + b"\n")
            await stdin.drain()
            async with asyncio.timeout(60):
                answer: Latencies = json.loads(await stdout.readline())
            return answer

        async def latencies(n: int) -> Latencies:
            return await ask(f"latencies {n}")

        async def agent_sdk(n: int, job_id: str) -> Latencies:
            return await ask(f"sdk {n} {job_id}")

        async def agent_inner(n: int) -> Latencies:
            return await ask(f"inner {n}")

        rest_url = ws_url.replace("ws://", "http://").removesuffix("/WS")
        yield Ends(
            rest_url,
            hub["ownerConnectionString"],
            hub["caPem"],
            latencies,
            agent_sdk,
            agent_inner,
        )


# -- measuring ------------------------------------------------------------------------------------


async def _timed(call: Callable[[], Awaitable[object]], n: int) -> Latencies:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        out.append(time.perf_counter() - started)
    return out


async def _load(
    call: Callable[[], Awaitable[object]], concurrency: int, seconds: float
) -> tuple[float, Latencies]:
    stop_at = time.perf_counter() + seconds
    latencies: Latencies = []

    async def caller() -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - started), latencies


def _manager(ends: Ends, *, keep_alive: bool) -> IoTHubJobManager:
    manager = IoTHubJobManager.from_connection_string(ends.connection_string)
    manager.protocol.config.connection.verify = ends.ca_pem
    manager.protocol.config.keep_alive = keep_alive
    return manager


def _parts(ends: Ends, n: int) -> dict[str, Latencies]:
    """The direct call's parts, timed in this thread: SAS signing, a plain requests GET."""
    auth = IoTHubJobManager.from_connection_string(ends.connection_string).auth
    sign: Latencies = []
    for _ in range(n):
        started = time.perf_counter()
        str(SasToken(auth["HostName"], auth["SharedAccessKey"], auth["SharedAccessKeyName"]))
        sign.append(time.perf_counter() - started)
    token = str(SasToken(auth["HostName"], auth["SharedAccessKey"], auth["SharedAccessKeyName"]))
    url = f"https://{auth['HostName']}/jobs/v2/{JOB_ID}?api-version=2021-04-12"
    plain: Latencies = []
    with requests.Session() as session:
        session.headers["Authorization"] = token
        # verify per request: a session-level verify loses to $REQUESTS_CA_BUNDLE.
        session.get(url, timeout=10, verify=ends.ca_pem).raise_for_status()
        for _ in range(n):
            started = time.perf_counter()
            session.get(url, timeout=10, verify=ends.ca_pem).json()
            plain.append(time.perf_counter() - started)
    return {"sas": sign, "plain": plain}


async def measure(
    ends: Ends, calls: int, rounds: int, concurrency: int, seconds: float
) -> dict[str, Any]:
    """Every figure of one layout."""
    loop = asyncio.get_running_loop()
    headers = {"appKey": APP_KEY}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=90)) as http:

        async def rest(service: str, inputs: dict[str, Any]) -> Any:
            url = f"{ends.rest_url}/Things/{GATEWAY}/Services/{service}"
            async with http.post(url, json=inputs, headers=headers) as reply:
                body = await reply.json()
                assert reply.status == 200, body
                return body

        await rest(
            "AzureIotDeviceJobScheduleTwinUpdateJob",
            {"patch": {"tags": {"bench": 1}}, "queryCondition": "deviceId = 'device-0001'",
             "jobId": JOB_ID},
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while (await rest("AzureIotDeviceJobGetJob", {"jobId": JOB_ID}))["rows"][0][
            "status"
        ] != "completed":
            assert time.monotonic() < deadline, "the benchmark job did not complete"
            await asyncio.sleep(0.1)

        plain_manager = _manager(ends, keep_alive=False)
        kept_manager = _manager(ends, keep_alive=True)
        one_thread = ThreadPoolExecutor(max_workers=1)
        many_threads = ThreadPoolExecutor(max_workers=concurrency)

        async def via_chain() -> object:
            return await rest("AzureIotDeviceJobGetJob", {"jobId": JOB_ID})

        async def echo() -> object:
            return await rest(ECHO_SERVICE, {"value": JOB_ID})

        async def direct_plain() -> object:
            return await loop.run_in_executor(one_thread, plain_manager.get_scheduled_job, JOB_ID)

        async def direct_kept() -> object:
            return await loop.run_in_executor(one_thread, kept_manager.get_scheduled_job, JOB_ID)

        async def direct_many() -> object:
            return await loop.run_in_executor(many_threads, kept_manager.get_scheduled_job, JOB_ID)

        for warm in (via_chain, echo, direct_plain, direct_kept):
            await _timed(warm, 30)
        await ends.agent_sdk(30, JOB_ID)
        out: dict[str, Latencies] = {
            k: []
            for k in (
                *("chain", "agent", "agent_inner", "echo", "agent_sdk"),
                *("direct_plain", "direct_kept", "direct_between"),
            )
        }
        per = max(1, calls // rounds)
        for _ in range(rounds):
            out["chain"] += await _timed(via_chain, per)
            out["agent"] += await ends.agent_latencies(per)
            out["agent_inner"] += await ends.agent_inner(per)
            out["echo"] += await _timed(echo, per)
            out["direct_kept"] += await _timed(direct_kept, per)
            out["direct_plain"] += await _timed(direct_plain, per)
            out["agent_sdk"] += await ends.agent_sdk(per, JOB_ID)
            for _ in range(per):  # each direct call right after other work, like the chain's
                await echo()
                out["direct_between"] += await _timed(direct_kept, 1)
        out.update(await loop.run_in_executor(one_thread, _parts, ends, calls))
        chain_rate, chain_load = await _load(via_chain, concurrency, seconds)
        direct_rate, direct_load = await _load(direct_many, concurrency, seconds)
        one_thread.shutdown()
        many_threads.shutdown()
    return {
        "lat": out,
        "load": {"chain": (chain_rate, chain_load), "direct": (direct_rate, direct_load)},
    }


def report(layout: str, figures: dict[str, Any], concurrency: int, seconds: float) -> None:
    """Print one layout's figures."""
    lat: dict[str, Latencies] = figures["lat"]

    def ms(x: float) -> str:
        return f"{x * 1000:6.2f}"

    med = {k: statistics.median(v) for k, v in lat.items()}
    print(f"\n[{layout}] sequential, {len(lat['chain'])} calls per row (interleaved rounds), ms:")
    print("                                         median    p90   mean")
    rows = [
        ("chain     GetJob via stand-in REST", "chain"),
        ("  agent   request in -> answer out", "agent"),
        ("  in agent get_job, during the chain", "agent_inner"),
        ("  in agent get_job, back to back", "agent_sdk"),
        ("echo      BenchEcho via stand-in REST", "echo"),
        ("direct    SDK, keep-alive (the bar)", "direct_kept"),
        ("  same, each call after an echo call", "direct_between"),
        ("direct    SDK as shipped (new TLS/call)", "direct_plain"),
        ("  part    plain requests GET, kept conn", "plain"),
        ("  part    SAS token signing", "sas"),
    ]
    for label, key in rows:
        v = lat[key]
        print(f"  {label:39s} {ms(med[key])} {ms(_pct(v, 0.9))} {ms(statistics.fmean(v))}")
    bar = med["direct_kept"]
    print(
        f"  ratio chain/direct(keep-alive): median {med['chain'] / bar:.2f}x, "
        f"p90 {_pct(lat['chain'], 0.9) / _pct(lat['direct_kept'], 0.9):.2f}x (goal <= 1.2x)"
    )
    print(
        f"  ratio chain/direct(as shipped): median {med['chain'] / med['direct_plain']:.2f}x; "
        f"agent/direct(keep-alive) median {med['agent'] / bar:.2f}x"
    )
    print(
        f"  hops (medians): stand-in REST + AlwaysOn + aiohttp = chain - agent = "
        f"{ms(med['chain'] - med['agent']).strip()} (echo: {ms(med['echo']).strip()}); "
        f"dispatch + job table = agent - get_job during the chain = "
        f"{ms(med['agent'] - med['agent_inner']).strip()}; get_job during the chain - back to "
        f"back = {ms(med['agent_inner'] - med['agent_sdk']).strip()}; worker hop + translation "
        f"= get_job back to back - direct = {ms(med['agent_sdk'] - bar).strip()}; msrest over "
        f"plain requests = {ms(bar - med['plain']).strip()}"
    )
    print(f"  {concurrency} concurrent callers for {seconds:g} s:")
    for name, (rate, load) in figures["load"].items():
        print(
            f"    {name:6s}: {rate:5.0f} calls/s, latency p50 {ms(_pct(load, 0.5)).strip()} ms, "
            f"p90 {ms(_pct(load, 0.9)).strip()} ms"
        )


async def main(
    layouts: list[str], calls: int, rounds: int, concurrency: int, seconds: float
) -> None:
    """Run and report each layout in turn."""
    _quiet()
    print(__doc__.split("Run:")[0].strip())
    for layout in layouts:
        with tempfile.TemporaryDirectory() as tmp:
            runner = separate_processes if layout == "processes" else one_process
            async with runner(Path(tmp)) as ends:
                figures = await measure(ends, calls, rounds, concurrency, seconds)
        report(layout, figures, concurrency, seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=["both", "processes", "one"], default="both")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    chosen = ["processes", "one"] if args.layout == "both" else [args.layout]
    asyncio.run(main(chosen, args.calls, args.rounds, args.concurrency, args.seconds))
