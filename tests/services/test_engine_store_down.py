"""The rollout engine while its store is down: the log gets the first failed step, then one line
a minute with the count, and one line when the store is back, never a warning per step.

The store is the real SQLite store whose file path is a directory (SQLite cannot open it: every
step fails with StoreUnavailable) until the test removes the directory; the engine's clock is
injected, so a minute passes without sleeping.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import SecretStr
from structlog.testing import capture_logs

from agent.iothub import IotHubClient
from agent.settings import IotHubSettings, JobSettings
from services.rollout_engine import STORE_DOWN_LOG_EVERY, RolloutEngine
from services.store import SqliteRolloutStore


async def test_a_store_down_for_minutes_logs_a_line_a_minute_and_one_when_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rollouts.sqlite"
    path.mkdir()  # a directory where the file should be: SQLite cannot open it
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    client = IotHubClient(  # never called: every step stops at the store first
        IotHubSettings(
            connection_string=SecretStr(
                "HostName=127.0.0.1:9;SharedAccessKeyName=iothubowner;SharedAccessKey=AAAA"
            ),
            read_retries=0,
        ),
        JobSettings(),
    )
    poll_interval = 2.0
    engine = RolloutEngine(
        client,
        SqliteRolloutStore(path),
        JobSettings(),
        poll_interval=poll_interval,
        clock=lambda: now[0],
    )
    steps_a_minute = int(STORE_DOWN_LOG_EVERY / poll_interval)  # 30
    with capture_logs() as logs:
        for _ in range(3 * steps_a_minute):  # three minutes of steps, every poll_interval
            await engine.logged_step()
            now[0] += timedelta(seconds=poll_interval)
        path.rmdir()  # the store is back
        await engine.logged_step()
        await engine.logged_step()

    store_lines = [e for e in logs if "store" in e["event"]]
    assert [e["event"] for e in store_lines] == [
        "rollout step stopped by the store",
        "rollout store still unavailable",
        "rollout store still unavailable",
        "rollout store back",
    ]
    first, minute1, minute2, back = store_lines
    assert first["log_level"] == "warning"
    assert "rollout store" in first["error"] and "rollouts.sqlite" in first["error"]
    # a minute after the first failure: that step is the 31st failed one
    assert (minute1["failed_steps"], minute1["down_seconds"]) == (steps_a_minute + 1, 60.0)
    assert (minute2["failed_steps"], minute2["down_seconds"]) == (2 * steps_a_minute + 1, 120.0)
    assert minute1["log_level"] == "warning" and minute1["error"] == first["error"]
    assert back["log_level"] == "info"
    assert back["failed_steps"] == 3 * steps_a_minute
    assert back["down_seconds"] == 3 * STORE_DOWN_LOG_EVERY
    assert path.is_file()
