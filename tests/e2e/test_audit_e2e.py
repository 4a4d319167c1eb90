"""The audit log end to end, on SQLite and on a real PostgreSQL server: calls through the
ThingWorx REST convention (stand-in → AlwaysOn → agent → SDK → IoT Hub emulator), then
``AzureIotDeviceJobQueryAudit`` on the gateway Thing returns them, newest first, with the Thing
each came to, its inputs and its outcome; filters and pages; an entry older than IoT Hub's
30 days (the recorder's clock set back) is still there."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.chain import CANCEL, GATEWAY, GET, METHOD, TWIN, AgentChain

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

AUDIT = "AzureIotDeviceJobQueryAudit"
START = "AzureIotDeviceJobStartRollout"
CANCEL_ROLLOUT = "AzureIotDeviceJobCancelRollout"
DEVICE = "device-0001"


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


async def _all_pages(chain: AgentChain, inputs: dict[str, Any]) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    token = ""
    while True:
        rows = await chain.rows(GATEWAY, AUDIT, {**inputs, "continuationToken": token})
        pages.append(rows)
        token = rows[0]["continuationToken"] if rows else ""
        if not token:
            return pages


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_query_audit_returns_the_changing_calls_with_thing_inputs_and_outcome(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    store = {"url": request.getfixturevalue("postgres_url")} if backend == "postgresql" else {}
    later = _iso(datetime.now(UTC) + timedelta(hours=1))
    async with AgentChain(tmp_path, devices=3, tier=None, bind=[DEVICE], store=store) as chain:
        twin = {
            "patch": {"properties": {"desired": {"fw": "2.0"}}},
            "queryCondition": "IS_DEFINED(deviceId)",
            "startTime": later,
            "jobId": "audit-twin",
        }
        (row,) = await chain.rows(GATEWAY, TWIN, twin)
        assert row["status"] == "scheduled"
        await chain.rows(GATEWAY, GET, {"jobId": "audit-twin"})  # a read: not recorded
        await chain.rows(GATEWAY, CANCEL, {"jobId": "audit-twin"})
        (method,) = await chain.rows(
            DEVICE, METHOD, {"methodName": "reboot", "startTime": later, "payload": {"apiKey": "k"}}
        )
        (direct,) = await chain.rows(DEVICE, "Reboot", {"delaySeconds": 0})  # a wrapper, now
        assert direct["status"] == 200, direct
        (wrapped,) = await chain.rows(
            GATEWAY, "Reboot", {"queryCondition": f"deviceId = '{DEVICE}'", "startTime": later}
        )
        status, text = await chain.call(GATEWAY, CANCEL, {"jobId": "no-such-job"})
        assert status == 404, text
        status, text = await chain.call(GATEWAY, TWIN, {"queryCondition": "deviceId = 'x'"})
        assert status == 400 and "missing required input patch" in text, text
        await chain.rows(
            GATEWAY,
            START,
            {
                "rolloutId": "audit-ro",
                "type": "twinUpdate",
                "devices": [DEVICE],
                "patch": {"tags": {"ring": 1}},
                "startTime": later,
            },
        )
        await chain.rows(GATEWAY, CANCEL_ROLLOUT, {"rolloutId": "audit-ro"})

        rows = await chain.rows(GATEWAY, AUDIT)
        seen = [(r["service"], r["thing"], r["jobId"], r["rolloutId"], r["outcome"]) for r in rows]
        assert seen == [
            (CANCEL_ROLLOUT, GATEWAY, "", "audit-ro", "ok"),
            (START, GATEWAY, "", "audit-ro", "ok"),
            (TWIN, GATEWAY, "", "", "BAD_REQUEST"),
            (CANCEL, GATEWAY, "no-such-job", "", "NOT_FOUND"),
            ("Reboot", GATEWAY, wrapped["jobId"], "", "ok"),
            ("Reboot", DEVICE, "", "", "ok"),
            (METHOD, DEVICE, method["jobId"], "", "ok"),
            (CANCEL, GATEWAY, "audit-twin", "", "ok"),
            (TWIN, GATEWAY, "audit-twin", "", "ok"),
        ]
        by_service = {(r["service"], r["outcome"]): r for r in rows}
        scheduled = by_service[(TWIN, "ok")]
        assert scheduled["action"] == "scheduleTwinJob"
        assert scheduled["inputs"]["patch"] == twin["patch"]
        assert scheduled["inputs"]["queryCondition"] == "IS_DEFINED(deviceId)"
        assert scheduled["message"] == "" and scheduled["user"] == ""
        assert scheduled["agent"].endswith(f"/{GATEWAY}")
        assert by_service[(METHOD, "ok")]["inputs"]["payload"] == {"apiKey": "***"}
        assert [r["action"] for r in rows if r["service"] == "Reboot"] == [
            "scheduleMethodJob",
            "callMethod",
        ]
        refused = by_service[(TWIN, "BAD_REQUEST")]
        assert refused["message"].startswith("missing required input patch")
        assert refused["inputs"] == {"queryCondition": "deviceId = 'x'"}
        assert "does not exist" in by_service[(CANCEL, "NOT_FOUND")]["message"]
        ids = [r["entryId"] for r in rows]
        assert ids == sorted(ids, reverse=True)  # one agent: written in time order

        # Filters.
        only_job = await chain.rows(GATEWAY, AUDIT, {"jobId": "audit-twin"})
        assert [r["action"] for r in only_job] == ["cancelJob", "scheduleTwinJob"]
        only_rollout = await chain.rows(GATEWAY, AUDIT, {"rolloutId": "audit-ro"})
        assert [r["action"] for r in only_rollout] == ["cancelRollout", "startRollout"]
        status, text = await chain.call(GATEWAY, AUDIT, {"jobId": "bad id!"})
        assert status == 400 and "input jobId" in text, text
        status, text = await chain.call(
            GATEWAY, AUDIT, {"startTime": later, "endTime": _iso(datetime.now(UTC))}
        )
        assert status == 400 and "startTime" in text and "after endTime" in text, text

        # Pages of 3: every entry once, in the same order.
        pages = await _all_pages(chain, {"maxRows": 3})
        assert [len(p) for p in pages] == [3, 3, 3]
        assert [r["entryId"] for p in pages for r in p] == [r["entryId"] for r in rows]
        status, text = await chain.call(
            GATEWAY,
            AUDIT,
            {"jobId": "audit-twin", "continuationToken": pages[0][0]["continuationToken"]},
        )
        assert status == 400 and "belongs to another list" in text, text

        # Past IoT Hub's 30 days: an entry stamped 40 days ago is still returned.
        real_clock = chain.app.audit.clock
        chain.app.audit.clock = lambda: real_clock() - timedelta(days=40)
        status, _ = await chain.call(GATEWAY, CANCEL, {"jobId": "long-ago"})
        chain.app.audit.clock = real_clock
        assert status == 404
        old = await chain.rows(
            GATEWAY, AUDIT, {"endTime": _iso(datetime.now(UTC) - timedelta(days=30))}
        )
        assert [(r["jobId"], r["outcome"]) for r in old] == [("long-ago", "NOT_FOUND")]
        assert len(await chain.rows(GATEWAY, AUDIT)) == len(rows) + 1
