"""Benchmark of several agents on one PostgreSQL store: rollout takeover time after ``kill -9`` of
the leader, and admission decisions per second with one agent and with two.

Run: ``python -m benchmarks.bench_takeover [--kills N] [--takeover T] [--seconds S]``.

Method: a throwaway PostgreSQL server (Debian's binaries, ``tests/support/postgres.py``) on
127.0.0.1.

- Takeover: a leader process (``python -c``, :class:`~services.store.leadership.PostgresLeadership`
  ``run()`` with ``store.takeover_seconds`` T) takes the hub's lock; this process is the standby,
  its ``run()`` trying every T/4. The leader gets SIGKILL at a random moment; measured: from the
  kill to the standby taking the lock (its ``on_change`` callback). Then a new leader process is
  started and the standby steps down (closes) so the next round starts the same way. N kills;
  median and max beside the bound by design (T/4 between two tries, the lock freed as soon as
  the server sees the killed socket close).
- Admission: :class:`~services.store.admission.PostgresAdmission` with 5 slots; each agent (a
  process of its own, as agents are) loops over: the store's time for a listing, take (a job id
  of its own), release when granted, for S seconds. Decisions per second (takes answered,
  granted or not) with one agent process and with two at once (5 slots), and two racing for
  one slot.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import signal
import statistics
import subprocess
import sys
import time

from services.store.admission import PostgresAdmission
from services.store.leadership import PostgresLeadership
from tests.support.postgres import PostgresCluster, find_binaries

HUB = "bench-hub.azure-devices.net"

_LEADER = """
import asyncio, sys
import structlog
from services.store.leadership import PostgresLeadership
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
async def main():
    lead = PostgresLeadership(sys.argv[1], sys.argv[2], float(sys.argv[3]))
    assert await lead.try_acquire()
    print("leading", flush=True)
    await lead.run()
asyncio.run(main())
"""


async def takeover(url: str, kills: int, takeover_seconds: float) -> list[float]:
    """Seconds from each SIGKILL of the leader to the standby leading."""
    rng = random.Random(14)
    times: list[float] = []
    for _ in range(kills):
        leader = subprocess.Popen(  # noqa: ASYNC220 - started and reaped around awaits, not in them
            [sys.executable, "-c", _LEADER, url, HUB, str(takeover_seconds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert leader.stdout is not None
        line = await asyncio.to_thread(leader.stdout.readline)
        assert line.strip() == "leading", line
        leading = asyncio.Event()
        standby = PostgresLeadership(url, HUB, takeover_seconds, on_change=leading.set)
        task = asyncio.create_task(standby.run())
        await asyncio.sleep(rng.uniform(0.0, takeover_seconds / 2))
        assert standby.role == "standby"
        leader.send_signal(signal.SIGKILL)
        killed = time.perf_counter()
        await asyncio.wait_for(leading.wait(), takeover_seconds * 4)
        times.append(time.perf_counter() - killed)
        await asyncio.to_thread(leader.wait)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await standby.close()
    return times


_AGENT = """
import asyncio, sys, time
import structlog
from services.store.admission import PostgresAdmission
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
async def main():
    url, hub, slots, seconds, name = sys.argv[1:6]
    adm = await PostgresAdmission(url, hub, int(slots), agent=name).prepare()
    decisions = grants = k = 0
    deadline = time.perf_counter() + float(seconds)
    while time.perf_counter() < deadline:
        k += 1
        job = f"{name}-j{k}"
        granted = await adm.take(job, (), await adm.listing_started())
        decisions += 1
        if granted:
            grants += 1
            await adm.release(job)
    await adm.close()
    print(decisions, grants, flush=True)
asyncio.run(main())
"""


async def admission(url: str, agents: int, seconds: float, slots: int = 5) -> tuple[int, int]:
    """(decisions, grants) of ``agents`` agent processes deciding at once for ``seconds``."""
    await PostgresAdmission(url, HUB, slots, agent="bench").prepare()  # the table, once
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _AGENT,
            url,
            HUB,
            str(slots),
            str(seconds),
            f"agent{n}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for n in range(agents)
    ]
    decisions = grants = 0
    for proc in procs:
        out, _ = await proc.communicate()
        made, granted = (int(x) for x in out.split())
        decisions += made
        grants += granted
    return decisions, grants


async def run(args: argparse.Namespace) -> None:
    bin_dir, why = find_binaries()
    if bin_dir is None:
        raise SystemExit(f"no PostgreSQL server to measure with: {why}")
    cluster = PostgresCluster(bin_dir)
    cluster.init()
    cluster.start()
    try:
        print(f"python {platform.python_version()}, {platform.machine()}, PostgreSQL {bin_dir}")
        times = await takeover(cluster.new_database(), args.kills, args.takeover)
        if times:
            print(
                f"takeover after kill -9 of the leader ({args.kills} kills, store.takeover_seconds "
                f"{args.takeover:g}): median {statistics.median(times) * 1000:.0f} ms, max "
                f"{max(times) * 1000:.0f} ms; bound by design T/4 = {args.takeover / 4 * 1000:.0f}"
                " ms + one round trip"
            )
        for agents, slots in ((1, 5), (2, 5), (2, 1)):
            url = cluster.new_database()
            decisions, grants = await admission(url, agents, args.seconds, slots)
            print(
                f"admission with {agents} agent process(es), {slots} slot(s): "
                f"{decisions / args.seconds:,.0f} decisions/s, {grants / args.seconds:,.0f} "
                "granted/s (take, then release when granted)"
            )
    finally:
        cluster.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="leader processes killed")
    parser.add_argument("--takeover", type=float, default=2.0, help="store.takeover_seconds")
    parser.add_argument("--seconds", type=float, default=5.0, help="admission run length")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
