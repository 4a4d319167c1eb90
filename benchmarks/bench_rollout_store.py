"""Benchmark of the rollout store on both backends: a big rollout stored, a big wave judged, and
what a call costs through the off-loop seam.

Run: ``python -m benchmarks.bench_rollout_store [--devices N] [--wave W] [--calls C]``.

Method: a throwaway PostgreSQL server from Debian's binaries (tests/support/postgres.py, on
loopback, ``fsync`` off as in the tests) and a SQLite file in a temporary directory (WAL,
``synchronous=FULL``, as the agent runs it). Each figure is the best of 3 runs
(``time.perf_counter``), each on a fresh database:

- ``create``: one rollout over ``N`` devices (the Start service's one transaction). On
  PostgreSQL beside it, the same rows by ``executemany`` instead of ``COPY`` (the one dialect
  difference of the store's writes, and why it is there).
- ``judge``: the verdict of a ``W``-device wave (the devices, the round, the rollout), one
  transaction. On PostgreSQL beside it, an ``UPDATE`` per device (``executemany``) instead of
  one ``UPDATE ... FROM unnest(arrays)``.
- ``get``: ``C`` calls of ``get`` (one small read, the engine's most common call), made directly
  and through :class:`~services.store.rollouts.AsyncRolloutStore` from the event loop (one worker
  thread per store): the median per call, and the difference is what keeping the store off the
  loop costs.
- ``fence``: ``C`` small writes (``update`` of one rollout's status) on PostgreSQL, unfenced and
  carrying a leadership epoch (:mod:`services.store.fencing`: the shared fence lock and the
  epoch read first in each write transaction): the median per call, and the difference is what
  fencing an engine write costs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import structlog

from services.store import fencing
from services.store.postgres import PostgresRolloutStore
from services.store.rollouts import AsyncRolloutStore, DeviceUpdate, RolloutRecord, RoundRecord
from services.store.schema import migrate
from services.store.sqlite import SqliteRolloutStore
from services.store.tables import RolloutTables
from tests.support.postgres import PostgresCluster, find_binaries

T0 = datetime(2026, 12, 1, tzinfo=UTC)


class _RowByRowPostgres(PostgresRolloutStore):
    """The PostgreSQL store writing devices a statement per row, as the SQLite one does (the
    comparison)."""

    _insert_devices = RolloutTables._insert_devices
    _update_devices = RolloutTables._update_devices


def _record(devices: int) -> RolloutRecord:
    return RolloutRecord(
        "bench", "twinUpdate", {"patch": {"tags": {"fw": "2"}}}, {"waveSize": 10_000}, "queued",
        None, None, 500, devices, 0, 1, None, T0, None, None, None,
    )  # fmt: skip


def _ids(count: int) -> list[str]:
    return [f"site-{i % 97}-device-{i}" for i in range(count)]


def _best(run: Callable[[], float], repeat: int = 3) -> float:
    return min(run() for _ in range(repeat))


def bench_create(opener: Callable[[], RolloutTables], devices: int) -> float:
    ids = [(d, 1) for d in _ids(devices)]

    def once() -> float:
        store = opener()
        store.get("warm")  # connect and migrate outside the timing
        started = time.perf_counter()
        store.create(_record(devices), ids)
        took = time.perf_counter() - started
        store.close()
        return took

    return _best(once)


def bench_judge(opener: Callable[[], RolloutTables], wave: int) -> float:
    ids = _ids(wave)
    updates = [
        DeviceUpdate(d, "succeeded", 1, False, "bench-w1-a1-p1", None, None, None, None, T0)
        for d in ids
    ]

    def once() -> float:
        store = opener()
        store.create(_record(wave), [(d, 1) for d in ids])
        store.add_round(RoundRecord("bench", 1, 1, tuple(ids), T0, "running"), [], wave=1)
        started = time.perf_counter()
        store.judge("bench", 1, 1, updates, None, status="completed", end_time=T0)
        took = time.perf_counter() - started
        store.close()
        return took

    return _best(once)


def bench_get(opener: Callable[[], RolloutTables], calls: int) -> tuple[float, float]:
    """Median seconds of one ``get``: direct, and through the off-loop seam."""
    store = opener()
    store.create(_record(1), [("d", 1)])
    direct = []
    for _ in range(calls):
        started = time.perf_counter()
        store.get("bench")
        direct.append(time.perf_counter() - started)

    async def through_seam() -> list[float]:
        seam = AsyncRolloutStore(store)
        took = []
        for _ in range(calls):
            started = time.perf_counter()
            await seam.get("bench")
            took.append(time.perf_counter() - started)
        seam.close()
        return took

    seamed = asyncio.run(through_seam())
    return statistics.median(direct), statistics.median(seamed)


def bench_fence(url: str, calls: int) -> tuple[float, float]:
    """Median seconds of one small write on PostgreSQL: unfenced, and fenced."""
    store = PostgresRolloutStore(url)
    store.create(_record(1), [("d", 1)])
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, fencing.COMPONENT, fencing.MIGRATIONS)
        conn.execute("INSERT INTO leadership (hub, epoch) VALUES ('bench', 1)")
    fence = fencing.Fence("bench", 1)
    figures = []
    for carried in (None, fence):
        took = []
        with store.fenced(carried):
            for n in range(calls):
                started = time.perf_counter()
                store.update("bench", status="running" if n % 2 else "queued")
                took.append(time.perf_counter() - started)
        figures.append(statistics.median(took))
    store.close()
    return figures[0], figures[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000, help="devices of the rollout")
    parser.add_argument("--wave", type=int, default=10_000, help="devices of the judged wave")
    parser.add_argument("--calls", type=int, default=2_000, help="get calls timed")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    bin_dir, why = find_binaries()
    if bin_dir is None:
        print(f"skipped: {why}")
        return 0
    cluster = PostgresCluster(bin_dir)
    cluster.init()
    cluster.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            files = iter(range(1_000_000))

            def sqlite() -> RolloutTables:
                return SqliteRolloutStore(Path(tmp) / f"s{next(files)}.sqlite")

            def postgres() -> RolloutTables:
                return PostgresRolloutStore(cluster.new_database())

            def postgres_row_by_row() -> RolloutTables:
                return _RowByRowPostgres(cluster.new_database())

            print(f"machine: {platform.machine()}, {platform.python_implementation()} "
                  f"{platform.python_version()}, PostgreSQL from {bin_dir}")  # fmt: skip
            n, w = args.devices, args.wave
            print(f"create, one rollout of {n:,} devices (best of 3):")
            lite, pg = bench_create(sqlite, n), bench_create(postgres, n)
            slow = bench_create(postgres_row_by_row, n)
            print(f"  SQLite                      {lite:7.3f} s  ({n / lite:,.0f} devices/s)")
            print(f"  PostgreSQL, COPY            {pg:7.3f} s  ({n / pg:,.0f} devices/s)")
            print(f"  PostgreSQL, executemany     {slow:7.3f} s  ({slow / pg:.1f}x COPY)")
            print(f"judge, the verdict of a {w:,}-device wave (best of 3):")
            print(f"  SQLite                      {bench_judge(sqlite, w):7.3f} s")
            pg = bench_judge(postgres, w)
            slow = bench_judge(postgres_row_by_row, w)
            print(f"  PostgreSQL, unnest          {pg:7.3f} s")
            print(f"  PostgreSQL, executemany     {slow:7.3f} s  ({slow / pg:.1f}x unnest)")
            print(f"get, median of {args.calls:,} calls, direct / through AsyncRolloutStore:")
            for name, opener in (("SQLite", sqlite), ("PostgreSQL", postgres)):
                direct, seamed = bench_get(opener, args.calls)
                print(
                    f"  {name:<11} {direct * 1e6:7.0f} µs / {seamed * 1e6:7.0f} µs "
                    f"(+{(seamed - direct) * 1e6:.0f} µs off the loop)"
                )
            plain, fenced = bench_fence(cluster.new_database(), args.calls)
            print(f"update, median of {args.calls:,} PostgreSQL writes, unfenced / fenced:")
            extra = (fenced - plain) * 1e6
            print(f"  PostgreSQL  {plain * 1e6:7.0f} µs / {fenced * 1e6:7.0f} µs "
                  f"(+{extra:.0f} µs: the fence lock and the epoch read)")  # fmt: skip
    finally:
        cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
