"""The emulator's injectable clock and IoT Hub error bodies."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from emulator.iothub.clock import ManualClock
from emulator.iothub.errors import HubError


async def test_manual_clock_wakes_sleepers_in_deadline_order() -> None:
    clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    woken: list[str] = []

    async def sleeper(name: str, seconds: int) -> None:
        await clock.sleep_until(clock.now() + timedelta(seconds=seconds))
        woken.append(name)

    tasks = [asyncio.create_task(sleeper("late", 3600)), asyncio.create_task(sleeper("soon", 10))]
    await asyncio.sleep(0)
    clock.advance(9)
    await asyncio.sleep(0)
    assert woken == []
    clock.advance(1)
    await asyncio.sleep(0)
    assert woken == ["soon"]
    clock.advance(3590)
    await asyncio.gather(*tasks)
    assert woken == ["soon", "late"]


def test_plain_error_body_has_iothub_shape() -> None:
    err = HubError.job_not_found("j1")
    body = err.body(datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC), "abc")
    assert err.status == 404
    assert body["Message"] == "ErrorCode:JobNotFound;Job with id 'j1' does not exist"
    assert body["ExceptionMessage"] == "Tracking ID:abc-G:0-TimeStamp:01/02/2030 03:04:05"


def test_method_error_body_nests_json_with_numeric_code() -> None:
    err = HubError.device_not_online(5)
    inner = json.loads(err.body(datetime(2030, 1, 1, tzinfo=UTC))["Message"])
    assert inner["errorCode"] == 404103
    assert inner["message"] == "Timed out waiting for device to connect."
    assert inner["info"] == {"timeout": "00:00:05"}
