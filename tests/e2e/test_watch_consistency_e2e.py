"""GetJob answered from the job watch never contradicts a fresher read (issue 12's watcher).

With a long watch interval, GetJob answers from the watch's last read. FindJobs reads the hub:
once it has said a job completed, GetJob must not answer the older "running" the watch still
held (the README tour met exactly that). REST convention → AlwaysOn → agent → emulator.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.support.chain import FIND, GATEWAY, GET, METHOD, AgentChain

pytestmark = [pytest.mark.timeout(120)]

SLOW = "device-0002"  # the one slow device (answers after 3 s), after the one ordinary device


async def test_getjob_after_findjobs_is_never_older(tmp_path: Path) -> None:
    async with AgentChain(
        tmp_path,
        devices=1,
        slow_devices=1,
        slow_delay=3.0,
        tier=None,
        jobs={"watch_interval": 60, "watch_max_interval": 60},
    ) as chain:
        # A method job on the slow device runs long enough for GetJob to read it "running",
        # which the watch then holds for 60 s.
        inputs = {"jobId": "w1", "methodName": "reboot", "queryCondition": f"deviceId = '{SLOW}'"}
        await chain.rows(GATEWAY, METHOD, inputs)
        deadline = time.monotonic() + 30
        while (await chain.rows(GATEWAY, GET, {"jobId": "w1"}))[0]["status"] != "running":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        while True:
            found = [j for j in await chain.rows(GATEWAY, FIND, {}) if j["jobId"] == "w1"]
            if found and found[0]["status"] in ("completed", "failed"):
                break
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.2)
        (after,) = await chain.rows(GATEWAY, GET, {"jobId": "w1"})
        assert after["status"] == found[0]["status"], (after, found[0])
        assert after["succeededCount"] == found[0]["succeededCount"]
