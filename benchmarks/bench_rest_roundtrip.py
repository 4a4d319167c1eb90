"""REST round trip through the ThingWorx stand-in and the agent to a trivial service.

Run: ``python -m benchmarks.bench_rest_roundtrip [--calls 5000] [--concurrency 50]``

Method: one process, one event loop. The stand-in (``emulator.thingworx``) listens on 127.0.0.1
port 0; the agent's AlwaysOn client (``agent.channel.AlwaysOnClient``) connects over a real
websocket on loopback, authenticates and binds Thing ``Bench`` with a service ``Echo`` (one
STRING input, STRING result, no work). Then ``--concurrency`` aiohttp callers share one
``ClientSession`` and post ``POST /Thingworx/Things/Bench/Services/Echo`` until ``--calls``
calls are done; each call's latency is the time from sending the request to reading the JSON
answer. A warm-up of 200 calls is not counted. Printed: calls/s over the whole run, p50/p90/p99
and max latency. Both ends and the client share the same CPU, so the figures are a floor for
the stand-in + agent pair, not a ThingWorx server's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import statistics
import time

import aiohttp

from agent.alwayson import BaseType, DataShape, FieldDefinition
from agent.channel import AlwaysOnClient
from agent.registry import RemoteService, ServiceCall, ThingRegistry
from agent.settings import JobSettings, ThingWorxSettings
from emulator.thingworx.server import ThingWorxStandIn
from logsetup import configure_logging

KEY = "bench-key"


async def _echo(call: ServiceCall) -> str:
    return str(call.inputs.get("text", ""))


def _registry() -> ThingRegistry:
    registry = ThingRegistry(JobSettings(call_deadline=30.0))
    registry.add_thing("Bench")
    shape = DataShape.of(FieldDefinition("text", BaseType.STRING))
    registry.add_service("Bench", RemoteService("Echo", "", shape, BaseType.STRING, None, _echo))
    return registry


async def run(calls: int, concurrency: int) -> None:
    standin = ThingWorxStandIn(KEY, port=0, call_timeout=30.0)
    await standin.start()
    settings = ThingWorxSettings(url=standin.ws_url, app_key=KEY, gateway_thing="BenchGateway")
    client = AlwaysOnClient(settings, _registry())
    task = asyncio.create_task(client.run())
    try:
        await client.wait_ready(10)
        await standin.wait_metadata("Bench", 10)
        url = f"{standin.rest_url}/Things/Bench/Services/Echo"
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector, headers={"appKey": KEY}) as http:

            async def one(i: int) -> float:
                started = time.perf_counter()
                async with http.post(url, json={"text": f"c{i}"}) as reply:
                    body = await reply.json()
                    if reply.status != 200 or body["rows"][0]["result"] != f"c{i}":
                        raise RuntimeError(f"bad answer {reply.status}: {body}")
                return time.perf_counter() - started

            counter = iter(range(200))  # warm-up
            latencies: list[float] = []

            async def worker(record_from: int) -> None:
                for i in counter:
                    latency = await one(i)
                    if i >= record_from:
                        latencies.append(latency)

            await asyncio.gather(*(worker(10**9) for _ in range(concurrency)))  # not recorded
            counter = iter(range(calls))
            latencies.clear()
            started = time.perf_counter()
            await asyncio.gather(*(worker(0) for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
    finally:
        await client.stop()
        await asyncio.wait_for(task, 10)
        await standin.stop()
    cuts = statistics.quantiles(latencies, n=100)
    print("REST round trip: aiohttp caller -> stand-in REST -> AlwaysOn -> agent -> Echo -> back")
    print(f"python {platform.python_version()}, {platform.machine()}, loopback, one event loop")
    print(f"calls {len(latencies)}, concurrency {concurrency}, warm-up 200 calls not counted")
    print(f"throughput  {len(latencies) / elapsed:,.0f} calls/s  ({elapsed:.2f} s)")
    print(
        f"latency ms  p50 {cuts[49] * 1000:.2f}  p90 {cuts[89] * 1000:.2f}  "
        f"p99 {cuts[98] * 1000:.2f}  max {max(latencies) * 1000:.2f}"
    )


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_rest_roundtrip")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    configure_logging("WARNING", "console")  # plain tracebacks, never the locals (issue 15)
    asyncio.run(run(args.calls, args.concurrency))


if __name__ == "__main__":
    main()
