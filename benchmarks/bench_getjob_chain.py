"""Benchmark: AzureIotDeviceJobGetJob through the whole chain vs the SDK's own get_scheduled_job.

Method: one process, one event loop, everything on loopback: the IoT Hub emulator (HTTPS REST on
a free port, MQTT/TLS on 127.0.0.252:8883, 5 simulated devices, no tier), the ThingWorx stand-in
(port 0) and the agent (``AgentApp``, 16 IoT Hub workers) connected to it over AlwaysOn. One twin
job is created and left to complete (not timed). Then, in the same run:

1. chain, sequential: ``--calls`` POSTs of ``/Thingworx/Things/AzureIotHub/Services/
   AzureIotDeviceJobGetJob`` (aiohttp, keep-alive) → stand-in → AlwaysOn → agent registry →
   IotHubClient worker → azure-iot-hub SDK (msrest/requests, keep-alive) → emulator;
2. direct, sequential: ``--calls`` ``IoTHubJobManager.get_scheduled_job`` calls from one worker
   thread (``asyncio.to_thread``, the same way the agent runs the SDK) against the same emulator;
3. the ratio chain/direct of the median and mean latencies (goal: median ratio ≤ 1.2);
4. throughput: ``--concurrency`` callers each issuing GetJob through the chain back to back for
   ``--seconds`` seconds → calls/s, with the latency p50/p95 under that load; and the same for
   the direct SDK with the same number of threads, for comparison.

The two sequential passes are interleaved in ``--rounds`` rounds to spread noise evenly. Both
sides pay the emulator's own service time; the ratio measures what the agent chain adds.

Run: ``python -m benchmarks.bench_getjob_chain [--calls 300] [--concurrency 50] [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog
from azure.iot.hub import IoTHubJobManager

from tests.e2e.chain import GATEWAY, Chain, running_chain

JOB_ID = "bench-job"


def _quiet() -> None:
    import logging

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.basicConfig(level=logging.ERROR)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _timed(call: Callable[[], Awaitable[object]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        out.append(time.perf_counter() - started)
    return out


async def _load(
    call: Callable[[], Awaitable[object]], concurrency: int, seconds: float
) -> tuple[int, list[float]]:
    stop_at = time.perf_counter() + seconds
    latencies: list[float] = []

    async def caller() -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return len(latencies), [time.perf_counter() - started, *latencies]


async def main(calls: int, rounds: int, concurrency: int, seconds: float) -> None:
    _quiet()
    with tempfile.TemporaryDirectory() as tmp:
        async with running_chain(Path(tmp), mqtt_host="127.0.0.252", devices=5, tier=None) as chain:
            await run(chain, calls, rounds, concurrency, seconds)


async def run(chain: Chain, calls: int, rounds: int, concurrency: int, seconds: float) -> None:
    await chain.rows(
        GATEWAY,
        "AzureIotDeviceJobScheduleTwinUpdateJob",
        {"patch": {"tags": {"bench": 1}}, "queryCondition": "deviceId = 'device-0001'",
         "jobId": JOB_ID},
    )  # fmt: skip
    await chain.wait_status(JOB_ID, ["completed"])

    manager = IoTHubJobManager.from_connection_string(chain.hub.owner_connection_string)
    manager.protocol.config.connection.verify = str(chain.hub.ca_pem_path)
    one_thread = ThreadPoolExecutor(max_workers=1)
    many_threads = ThreadPoolExecutor(max_workers=concurrency)
    loop = asyncio.get_running_loop()

    async def via_chain() -> object:
        status, body = await chain.call(GATEWAY, "AzureIotDeviceJobGetJob", {"jobId": JOB_ID})
        assert status == 200, body
        return body

    async def direct() -> object:
        job = await loop.run_in_executor(one_thread, manager.get_scheduled_job, JOB_ID)
        assert job.job_id == JOB_ID
        return job

    async def direct_many() -> object:
        return await loop.run_in_executor(many_threads, manager.get_scheduled_job, JOB_ID)

    # Warm-up: connections, sessions, code paths.
    await _timed(via_chain, 30)
    await _timed(direct, 30)
    chain_lat: list[float] = []
    direct_lat: list[float] = []
    agent_lat: list[float] = []
    for _ in range(rounds):
        chain_lat += await _timed(via_chain, calls // rounds)
        agent_lat += list(chain.app.channel.stats.latencies)[-(calls // rounds) :]
        direct_lat += await _timed(direct, calls // rounds)

    chain_calls, chain_load = await _load(via_chain, concurrency, seconds)
    direct_calls, direct_load = await _load(direct_many, concurrency, seconds)
    one_thread.shutdown()
    many_threads.shutdown()

    def ms(x: float) -> str:
        return f"{x * 1000:.2f} ms"

    print(__doc__.split("Run:")[0].strip())
    print()
    print(f"sequential, {len(chain_lat)} calls each side ({rounds} interleaved rounds):")
    for name, lat in (("chain ", chain_lat), ("direct", direct_lat)):
        print(
            f"  {name}: median {ms(statistics.median(lat))}, mean {ms(statistics.fmean(lat))}, "
            f"p95 {ms(_pct(lat, 0.95))}"
        )
    print(
        f"  agent : median {ms(statistics.median(agent_lat))} of the chain's time is spent in the "
        "agent (AlwaysOn request in -> answer out, SDK call included)"
    )
    median_ratio = statistics.median(chain_lat) / statistics.median(direct_lat)
    mean_ratio = statistics.fmean(chain_lat) / statistics.fmean(direct_lat)
    agent_ratio = statistics.median(agent_lat) / statistics.median(direct_lat)
    print(
        f"  ratio chain/direct: median {median_ratio:.2f}x, mean {mean_ratio:.2f}x "
        f"(goal <= 1.2x); agent/direct median {agent_ratio:.2f}x"
    )
    print(f"{concurrency} concurrent callers for {seconds:g} s:")
    for name, count, load in (
        ("chain ", chain_calls, chain_load),
        ("direct", direct_calls, direct_load),
    ):
        span, lat = load[0], load[1:]
        print(
            f"  {name}: {count / span:.0f} calls/s, latency p50 {ms(_pct(lat, 0.5))}, "
            f"p95 {ms(_pct(lat, 0.95))}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds, args.concurrency, args.seconds))
