"""The IoT Hub emulator's rollout-only paths, the code before issue 11's s20 change against now.

Run: ``python -m benchmarks.bench_emulator_rollout_paths [--devices N] [--jobs J]``.

Method: an in-process emulator (REST on 127.0.0.1 over TLS) with N devices (default 100,000)
and J twin jobs (default 200), each a rollout wave's ``deviceId IN [...]`` of N/J ids (about
7.5 KB for 500 ids), run to completion. Then, in one process, each path is timed
(``time.perf_counter``, best of 3) the way it was (a reference copy of the old code below,
checked to give the same result) and the way it is:

1. ``devices.jobs`` rows of every job, read as the agent reads them (pages of 1,000, the
   ``jobId = '...'`` condition, JSON of the page): the old per-row formatting of the job's times,
   status enum, dataclass and outcome decoding, against ``JobEngine.device_job_rows``.
2. Reading J wave conditions (``iothub_query`` cache cleared): the old one-pass reader (the
   grammar's STRING terminal and the escape decoder for every string) and the LALR grammar,
   against ``parse_condition`` now.
3. Selecting each wave's devices: the old key lookup then a whole twin per id to evaluate,
   against ``Registry.select_device_ids`` now (no twin for an exact id list).
4. The rollout's target query ``SELECT deviceId FROM devices WHERE IS_DEFINED(deviceId)``:
   the old evaluation over whole twins in one go (the event loop blocked throughout), against
   the query over twins cut to the members it reads; and through the REST API with the
   unmodified SDK (first page), with the longest stall of the emulator's event loop meanwhile
   (a ticker task on the loop records the largest gap between its 1 ms ticks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import QuerySpecification
from lark import Token

from emulator.iothub import IoTHubEmulator
from emulator.iothub.database import Database
from emulator.iothub.jobs import JobEngine
from emulator.iothub.jobs.states import DeviceJobStatus
from emulator.iothub.jobs.store import JobStore
from emulator.iothub.jobs.timestamps import format_utc, parse_utc
from emulator.iothub.registry import Registry
from iothub_query import (
    Condition,
    Constant,
    Membership,
    QuerySyntaxError,
    parse_condition,
    parse_query,
    parsing,
    pinned_members,
    run_query,
    top_level_names,
)
from iothub_query import (
    Path as QueryPath,
)
from iothub_query.values import quote_string

T = TypeVar("T")
_PAGE = 1000


def best(runs: int, work: Callable[[], T]) -> tuple[float, T]:
    """Best wall time of ``runs`` calls, and the last result."""
    times: list[float] = []
    result: Any = None
    for _ in range(runs):
        started = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - started)
    return min(times), result


# ---- the code before (reference copies, checked equal to the code now) ----------------------


def old_rows(store: JobStore, jobs: dict[str, dict[str, Any]], job_id: str, after: Any) -> Any:
    """``JobEngine._rows`` as it was: the job's times formatted and the outcome decoded per row."""
    for row in store.read_rows(job_id, after, _PAGE + 1):
        job = jobs[row[0]]
        start = parse_utc(job["startTime"])
        end = start + timedelta(seconds=job["maxExecutionTimeInSeconds"])
        item: dict[str, Any] = {
            "deviceId": row[1],
            "jobId": row[0],
            "jobType": job["type"],
            "status": DeviceJobStatus(row[2]).value,
            "startTimeUtc": format_utc(start),
            "endTimeUtc": format_utc(end),
            "createdDateTimeUtc": row[3],
            "lastUpdatedDateTimeUtc": row[4],
            "outcome": json.loads(row[5]),
        }
        if row[6] is not None:
            item["error"] = json.loads(row[6])
        yield item


def old_plain_membership(text: str) -> Membership | None:
    """``iothub_query.parsing._plain_membership`` as it was (the escape decoder per string)."""
    whole, string, _ = parsing._membership_patterns()
    found = whole.fullmatch(text)
    if found is None:
        return None
    builder = parsing._Builder(text)
    try:
        values = tuple(
            Constant(builder.string(Token("STRING", item.group(0))))
            for item in string.finditer(found.group(3))
        )
    except QuerySyntaxError:
        return None
    return Membership(QueryPath((found.group(1),)), values, found.group(2).lower() == "nin")


def old_select(registry: Registry, condition: Condition) -> list[str]:
    """``Registry.select_device_ids`` as it was for a wave: lookup, then a whole twin per id."""
    pinned = pinned_members(condition, "deviceId") or frozenset()
    ids = sorted(i for i in pinned if isinstance(i, str) and i in registry)
    return [i for i in ids if condition.matches(registry.twin_doc(i) or {})]


# ---- the run -----------------------------------------------------------------------------------


async def main(devices: int, jobs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with IoTHubEmulator(Path(tmp), rest_port=0, mqtt_port=0) as hub:
            await _run(hub, Path(tmp), devices, jobs)


async def _run(hub: IoTHubEmulator, data_dir: Path, devices: int, jobs: int) -> None:
    engine = hub.jobs
    assert isinstance(engine, JobEngine)  # the emulator's engine, which can wait for a status
    ids = hub.ensure_devices(devices)
    wave = max(1, devices // jobs)
    texts = [
        "deviceId IN [" + ", ".join(map(quote_string, ids[k * wave : (k + 1) * wave])) + "]"
        for k in range(jobs)
    ]
    for k, text in enumerate(texts):
        body = {
            "type": "scheduleUpdateTwin",
            "queryCondition": text,
            "startTime": hub.clock.now().isoformat(),
            "maxExecutionTimeInSeconds": 3600,
            "updateTwin": {"etag": "*", "tags": {"wave": k}},
        }
        await engine.create_job(f"wave-{k}", body)
        await engine.wait_for_status(f"wave-{k}", "completed", timeout=120)
    print(f"method: in-process emulator, {devices:,} devices, {jobs} completed twin jobs of")
    print(f"        {wave} ids each (conditions of {len(texts[0]):,} characters); best of 3;")
    print(f"        Python {platform.python_version()} on {platform.machine()}")
    print(f"{'path':<44}{'before':>10}{'now':>10}{'ratio':>8}")

    def show(label: str, before: float, now: float) -> None:
        print(f"{label:<44}{before:>9.3f}s{now:>9.3f}s{before / now:>7.1f}x")

    # 1. devices.jobs rows, pages of 1,000, as the agent reads each wave's results.
    store = JobStore(Database(data_dir / "hub.sqlite"))
    job_json = {f"wave-{k}": hub.jobs.get_job(f"wave-{k}") for k in range(jobs)}

    def read_rows(reader: Callable[[str, Any], Any], evaluate: bool) -> list[str]:
        pages: list[str] = []
        for k in range(jobs):
            query = parse_query(f"SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'wave-{k}'")
            where = query.where
            assert where is not None
            after = None
            while True:
                rows = list(reader(f"wave-{k}", after))
                found = [r for r in rows if not evaluate or where.matches(r)]
                pages.append(json.dumps(found[:_PAGE], separators=(",", ":")))
                if len(rows) <= _PAGE:
                    break
                after = (rows[_PAGE - 1]["jobId"], rows[_PAGE - 1]["deviceId"])
        return pages

    before, old = best(3, lambda: read_rows(lambda j, a: old_rows(store, job_json, j, a), True))
    now, new = best(
        3, lambda: read_rows(lambda j, a: hub.jobs.device_job_rows(j, a, _PAGE + 1), False)
    )
    assert old == new, "the rows differ"
    show(f"1. devices.jobs rows ({devices:,}, JSON pages)", before, now)

    # 2. the wave conditions, read as a job starts.
    def read(reader: Callable[[str], Any]) -> list[Any]:
        parsing._parse_condition_cached.cache_clear()
        return [reader(text) for text in texts]

    lalr, by_grammar = best(3, lambda: read(lambda t: parse_condition(f"({t})")))
    before, old_conditions = best(3, lambda: read(old_plain_membership))
    now, conditions = best(3, lambda: read(parse_condition))
    assert old_conditions == conditions == by_grammar, "the conditions differ"
    show(f"2. {jobs} wave conditions read (old one-pass)", before, now)
    show("   the same by the LALR grammar", lalr, now)

    # 3. each wave's device selection.
    registry = hub.registry
    before, old_selected = best(3, lambda: [old_select(registry, c) for c in conditions])
    now, selected = best(3, lambda: [registry.select_device_ids(c) for c in conditions])
    assert old_selected == selected, "the selections differ"
    show(f"3. {jobs} wave selections", before, now)

    # 4. the rollout's target query.
    text = "SELECT deviceId FROM devices WHERE IS_DEFINED(deviceId)"
    query = parse_query(text)
    before, old = best(3, lambda: run_query(query, registry.iter_twin_docs()))
    names = top_level_names(query)
    now, cut = best(3, lambda: run_query(query, registry.iter_twin_docs(names)))
    assert old == cut, "the projections differ"
    show(f"4. {text[:30]}...", before, now)
    rest, stall = await _through_rest(hub, text)
    print(f"   through REST (SDK, first page of 1,000): {rest:.3f} s; longest event-loop stall")
    print(f"   meanwhile {stall * 1000:.0f} ms (before: the loop blocked {before:.3f} s or more)")


async def _through_rest(hub: IoTHubEmulator, text: str) -> tuple[float, float]:
    rm = IoTHubRegistryManager.from_connection_string(hub.owner_connection_string)
    rm.protocol.config.connection.verify = str(hub.ca_pem_path)
    stall = 0.0
    done = False

    async def tick() -> None:
        nonlocal stall
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            stall, last = max(stall, now - last), now

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    await asyncio.to_thread(rm.query_iot_hub, QuerySpecification(query=text), None, 1000)
    took = time.perf_counter() - started
    done = True
    await ticker
    return took, stall


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.devices, args.jobs))
