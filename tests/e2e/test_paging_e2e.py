"""QueryJobResults and FindJobs page with maxRows + continuationToken, end to end (issue 12).

REST convention on the stand-in → AlwaysOn → agent → azure-iot-hub SDK → IoT Hub emulator. The
agent's per-call bound is set low (``iothub.max_rows_per_call`` = 700, hub pages of 100), so a
caller reading more rows than the bound without paging is refused ENTITY_TOO_LARGE, and the same
rows read page by page arrive whole, each row once, with the token on the first row of each page
and none on the last page. 100,000 rows are read the same way by
``benchmarks/bench_job_results.py --paged`` (figures in BENCHMARKS.md); here 2,500 keep the
suite fast.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from tests.support.chain import ENDED, FIND, GATEWAY, RESULTS, TWIN, AgentChain

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(240)]

DEVICES = 2500
BOUND = 700
QUERY = "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'paged'"
FUTURE_JOBS = 23
MINE = "device-0007"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chain(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AgentChain]:
    async with AgentChain(
        tmp_path_factory.mktemp("paging"),
        devices=DEVICES,
        fleet=False,
        tier=None,
        bind=[MINE],
        iothub={"max_rows_per_call": BOUND},
    ) as running:
        await running.rows(
            GATEWAY,
            TWIN,
            {
                "patch": {"tags": {"paged": 1}},
                "queryCondition": "IS_DEFINED(deviceId)",
                "jobId": "paged",
            },
        )
        await running.wait_status("paged", ENDED, timeout=120)
        start = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        for n in range(FUTURE_JOBS):
            await running.rows(
                GATEWAY,
                TWIN,
                {
                    "patch": {"tags": {"n": n}},
                    "queryCondition": f"deviceId = 'device-{n + 1:04d}'",
                    "jobId": f"later-{n:02d}",
                    "startTime": start,
                },
            )
        yield running


async def _pages(
    chain: AgentChain, thing: str, service: str, inputs: dict[str, Any]
) -> list[list[dict[str, Any]]]:
    """Every page of a paged service, following the first row's continuationToken."""
    pages: list[list[dict[str, Any]]] = []
    token: str | None = None
    while True:
        rows = await chain.rows(thing, service, {**inputs, "continuationToken": token or ""})
        pages.append(rows)
        assert all(not r.get("continuationToken") for r in rows[1:]), "token on a later row"
        token = rows[0].get("continuationToken") if rows else None
        if not token:
            return pages
        assert len(pages) < 1000, "paging does not end"


async def test_results_beyond_the_bound_are_refused_without_paging_and_read_with_it(
    chain: AgentChain,
) -> None:
    status, body = await chain.call(GATEWAY, RESULTS, {"query": QUERY, "maxRows": 1000})
    # One page holds at most the per-call bound: no ENTITY_TOO_LARGE, a token instead.
    assert status == 200, body
    assert len(body["rows"]) == BOUND and body["rows"][0]["continuationToken"]

    pages = await _pages(chain, GATEWAY, RESULTS, {"query": QUERY, "maxRows": 600})
    devices = [r["deviceId"] for page in pages for r in page]
    assert len(devices) == DEVICES and len(set(devices)) == DEVICES
    assert [len(p) for p in pages] == [600, 600, 600, 600, 100]
    assert not pages[-1][0].get("continuationToken")


async def test_a_page_can_be_read_again_with_its_token(chain: AgentChain) -> None:
    (first, *_) = await _first_page(chain, 300)
    token = first["continuationToken"]
    again = [await chain.rows(GATEWAY, RESULTS, _next(token)) for _ in range(2)]
    assert [r["deviceId"] for r in again[0]] == [r["deviceId"] for r in again[1]]
    assert again[0][0]["deviceId"] != first["deviceId"]


async def _first_page(chain: AgentChain, max_rows: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await chain.rows(
        GATEWAY, RESULTS, {"query": QUERY, "maxRows": max_rows}
    )
    return rows


def _next(token: str) -> dict[str, Any]:
    return {"query": QUERY, "maxRows": 300, "continuationToken": token}


async def test_a_token_with_other_inputs_or_not_ours_is_one_clear_line(
    chain: AgentChain,
) -> None:
    token = (await _first_page(chain, 10))[0]["continuationToken"]
    other = {"query": QUERY + " AND devices.jobs.status = 'completed'", "continuationToken": token}
    status, text = await chain.call(GATEWAY, RESULTS, other)
    assert status == 400 and "continuationToken belongs to another list" in text
    status, text = await chain.call(MINE, RESULTS, {"query": QUERY, "continuationToken": token})
    assert status == 400 and "belongs to another list" in text
    status, text = await chain.call(GATEWAY, RESULTS, {"query": QUERY, "continuationToken": "x!"})
    assert status == 400 and "not a token this service gave" in text and "\n" not in text
    # The connection stays up for the next call.
    assert len(await _first_page(chain, 5)) == 5


async def test_find_jobs_pages_newest_first_across_windows(chain: AgentChain) -> None:
    # The bound (700) holds every job here: one window, so the pages are newest first throughout.
    pages = await _pages(chain, GATEWAY, FIND, {"maxRows": 5})
    ids = [r["jobId"] for page in pages for r in page]
    assert len(ids) == FUTURE_JOBS + 1 and len(set(ids)) == len(ids)
    created = [r["createdTime"] for page in pages for r in page]
    assert created == sorted(created, reverse=True)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 4]
    # A status filter binds the token: the same token with another status is refused.
    token = pages[0][0]["continuationToken"]
    status, text = await chain.call(
        GATEWAY, FIND, {"status": "scheduled", "maxRows": 5, "continuationToken": token}
    )
    assert status == 400 and "belongs to another list" in text


async def test_device_thing_pages_only_its_own_rows(chain: AgentChain) -> None:
    pages = await _pages(chain, MINE, RESULTS, {"query": QUERY, "maxRows": 1})
    assert [r["deviceId"] for page in pages for r in page] == [MINE]
    (jobs,) = await _pages(chain, MINE, FIND, {"maxRows": 10})
    assert [r["jobId"] for r in jobs] == ["later-06", "paged"]


async def test_find_jobs_past_the_bound_pages_window_by_window(tmp_path: Any) -> None:
    """With more jobs than the bound (4 here, hub pages of 2), a window is 4 jobs of IoT Hub's
    list: each page is newest first within its window, every job arrives once, none is refused."""
    async with AgentChain(
        tmp_path,
        devices=2,
        fleet=False,
        tier=None,
        page_size=2,
        iothub={"max_rows_per_call": 4},
    ) as small:
        start = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        for n in range(9):
            await small.rows(
                GATEWAY,
                TWIN,
                {
                    "patch": {"tags": {"n": n}},
                    "queryCondition": "deviceId = 'device-0001'",
                    "jobId": f"w-{n}",
                    "startTime": start,
                },
            )
        pages = await _pages(small, GATEWAY, FIND, {"maxRows": 3})
        ids = [[r["jobId"] for r in page] for page in pages]
        # Windows (the hub lists oldest first): w-0..w-3, w-4..w-7, w-8.
        assert ids == [["w-3", "w-2", "w-1"], ["w-0"], ["w-7", "w-6", "w-5"], ["w-4"], ["w-8"]]
