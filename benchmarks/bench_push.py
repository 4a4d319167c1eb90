"""Benchmark: hub reads with many watchers of one job, and the latency of pushed progress.

Method. The whole chain on loopback in this process (:class:`tests.support.chain.AgentChain`:
IoT Hub emulator, a fleet, the ThingWorx stand-in, the agent), ``jobs.watch_interval`` =
``--interval``.

1. Reads. One device-method job on a device that answers after ``--hold`` s stays running; then
   1, 10 and 100 watchers (REST callers of GetJob, each calling again as soon as answered, for
   ``--seconds`` s) follow it. Figure: the hub's ``GET /jobs/v2/{id}`` requests per second
   (counted on the emulator), with the agent's job watchers (GetJob read through them) and,
   for comparison, without (``JobServices.watch = None``: every GetJob is a hub read, the
   behaviour before). Goal: flat with the watchers (one read per interval).
2. Latency. ``--jobs`` jobs, one after another, on an online device; for each, the time from the
   hub's end of the job (its ``endTime``) to the ``AzureIotDeviceJobStatusChanged`` event with
   the ended status arriving at the stand-in (its receive time). Goal: ≤ one watch interval +
   50 ms.

Run: ``python -m benchmarks.bench_push [--interval 1] [--seconds 5] [--hold 30] [--jobs 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from tests.support.chain import ENDED, GATEWAY, METHOD, AgentChain

GET_JOB_ROUTE = "GET /jobs/v2/{id}"


async def _job(chain: AgentChain, job_id: str, device: str) -> None:
    await chain.rows(
        GATEWAY,
        METHOD,
        {
            "jobId": job_id,
            "queryCondition": f"deviceId IN ['{device}']",
            "methodName": "reboot",
            "payload": {},
            "responseTimeoutInSeconds": 60,
            "connectTimeoutInSeconds": 0,
        },
    )


async def _reads(
    chain: AgentChain, job_id: str, watchers: int, seconds: float
) -> tuple[float, int]:
    stop = time.monotonic() + seconds
    calls = 0

    async def follow() -> None:
        nonlocal calls
        while time.monotonic() < stop:
            await chain.job(job_id)
            calls += 1

    before = chain.hub.requests(GET_JOB_ROUTE)
    started = time.monotonic()
    await asyncio.gather(*(follow() for _ in range(watchers)))
    elapsed = time.monotonic() - started
    return (chain.hub.requests(GET_JOB_ROUTE) - before) / elapsed, calls


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with AgentChain(
            Path(tmp),
            mqtt_host="127.0.0.239",
            devices=1,
            offline_share=0.0,
            slow_devices=1,
            slow_delay=args.hold,
            jobs={"watch_interval": args.interval, "watch_max_interval": args.interval},
        ) as chain:
            slow, online = "device-0002", "device-0001"
            await _job(chain, "bench-hold", slow)
            await asyncio.sleep(args.interval)
            print(f"reads: one running job, watch_interval {args.interval:g} s, "
                  f"{args.seconds:g} s per figure")  # fmt: skip
            print(f"{'watchers':>8}  {'hub reads/s (watch)':>20}  {'GetJob/s':>9}  "
                  f"{'hub reads/s (no watch)':>23}  {'GetJob/s':>9}")  # fmt: skip
            watch = chain.app.jobs.watch
            for watchers in (1, 10, 100):
                chain.app.jobs.watch = watch
                with_watch, calls_w = await _reads(chain, "bench-hold", watchers, args.seconds)
                chain.app.jobs.watch = None
                without, calls_n = await _reads(chain, "bench-hold", watchers, args.seconds)
                print(f"{watchers:>8}  {with_watch:>20.2f}  {calls_w / args.seconds:>9.0f}  "
                      f"{without:>23.2f}  {calls_n / args.seconds:>9.0f}")  # fmt: skip
            chain.app.jobs.watch = watch
            await chain.wait_status("bench-hold", ENDED, timeout=args.hold + 30)

            queue = chain.standin.registry.subscribe()
            latencies = []
            for n in range(args.jobs):
                job_id = f"bench-latency-{n}"
                await _job(chain, job_id, online)
                while True:
                    fired = await asyncio.wait_for(queue.get(), 60)
                    row = fired.data.rows[0] if fired.data.rows else {}
                    if (
                        fired.event == "AzureIotDeviceJobStatusChanged"
                        and row.get("jobId") == job_id
                        and row.get("status") in ENDED
                    ):
                        break
                end = row["endTime"]
                assert isinstance(end, datetime)
                latencies.append(fired.received - end.timestamp())
            print(f"\nlatency: hub end of job -> event at the stand-in, {args.jobs} jobs")
            print(f"  median {statistics.median(latencies) * 1000:.0f} ms, "
                  f"max {max(latencies) * 1000:.0f} ms; goal <= "
                  f"{args.interval * 1000 + 50:.0f} ms (one interval + 50 ms)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--hold", type=float, default=45.0)
    parser.add_argument("--jobs", type=int, default=5)
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
