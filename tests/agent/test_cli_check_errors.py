"""``jobs-agent check`` prints the channel's ``last_error`` with its hint, once: the channel's
own failure log lines are not repeated on stderr (outside DEBUG)."""

from __future__ import annotations

import io
import socket

import pytest
from pydantic import SecretStr
from rich.console import Console

from agent import cli
from agent.settings import (
    IotHubSettings,
    JobSettings,
    LogSettings,
    Settings,
    StoreSettings,
    ThingWorxSettings,
)
from logsetup import configure_logging
from tests.support.settings import CATALOGUE

pytestmark = pytest.mark.usefixtures("restore_logging")


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(port: int, **sections: object) -> Settings:
    """Settings for ThingWorx on ``port`` of 127.0.0.1 and a hub nobody answers for."""
    return Settings(
        thingworx=ThingWorxSettings(
            url=f"ws://127.0.0.1:{port}/Thingworx/WS",
            app_key=SecretStr("k"),
            connect_timeout=2.0,
            auth_timeout=2.0,
        ),
        iothub=IotHubSettings(
            connection_string=SecretStr(
                "HostName=127.0.0.1:9;SharedAccessKeyName=iothubowner;SharedAccessKey=QUFBQQ=="
            )
        ),
        jobs=JobSettings(wrappers_dir=str(CATALOGUE)),
        **sections,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(("level", "logged"), [("WARNING", False), ("DEBUG", True)])
async def test_a_refused_connection_is_printed_once_with_its_hint(level: str, logged: bool) -> None:
    logs = io.StringIO()
    configure_logging(level, "json", stream=logs)
    settings = _settings(_unused_port(), log=LogSettings(level=level))
    out = io.StringIO()
    assert await cli.check(settings, Console(file=out, width=200)) == 1
    text = out.getvalue()
    assert "✗ ThingWorx" in text and "link failed: cannot connect" in text, text
    assert "cannot reach ThingWorx" in text
    assert ('"link failed"' in logs.getvalue()) is logged


async def test_check_never_drives_rollouts_nor_touches_a_shared_store(postgres_url: str) -> None:
    """``check`` next to (or instead of) a running agent must not take the rollout leadership
    of a shared store, nor step its rollouts (which would migrate the store's tables), even
    while it waits on a ThingWorx that accepts the connection and never answers."""
    import psycopg

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # connections complete in the backlog; nothing ever answers
    store = StoreSettings(url=SecretStr(postgres_url), takeover_seconds=1.0)
    settings = _settings(silent.getsockname()[1], store=store)
    try:
        assert await cli.check(settings, Console(file=io.StringIO(), width=200)) == 1
    finally:
        silent.close()
    with psycopg.connect(postgres_url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    assert tables == []
