"""The embedded run prints the app key only when it generated it: a key from the environment or
the configuration is named, not shown, and the printed examples still work (they read the key
from ``$THINGWORX_APP_KEY``). Run as a real ``jobs-agent run`` process on a fresh loopback
address; the printed curl line is run by a real shell."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.support.network import fresh_loopback
from tests.support.settings import CATALOGUE

KEY = "user-chosen-key-7f3a9c"


async def _banner(tmp_path: Path, **env_extra: str) -> str:
    host = fresh_loopback()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBS_AGENT_", "THINGWORX_"))}
    env.update(
        JOBS_AGENT_EMBEDDED__HOST=host,
        JOBS_AGENT_EMBEDDED__THINGWORX_PORT="0",
        JOBS_AGENT_EMBEDDED__IOTHUB_REST_PORT="0",
        JOBS_AGENT_EMBEDDED__DEVICES="2",
        JOBS_AGENT_EMBEDDED__DATA_DIR=str(tmp_path / "data"),
        JOBS_AGENT_JOBS__WRAPPERS_DIR=str(CATALOGUE),
        JOBS_AGENT_HEALTH__HOST=host,
        JOBS_AGENT_HEALTH__PORT="0",
        **env_extra,
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", "run", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert process.stdout is not None
        async with asyncio.timeout(60):
            while not lines or not lines[-1].startswith("ready"):
                raw = await process.stdout.readline()
                assert raw, "".join(lines)
                lines.append(raw.decode())
        banner = "".join(lines)
        curl = next(line.strip() for line in lines if line.strip().startswith("curl "))
        # The printed example works as printed, with the key from the environment.
        shell = await asyncio.create_subprocess_exec(
            "bash", "-c", curl, env={**env, "THINGWORX_APP_KEY": KEY},
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        answer, _ = await shell.communicate()
        assert b'"jobId"' in answer, answer
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await process.wait() == 0
        return banner
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize(
    ("env_name", "named"),
    [
        ("THINGWORX_APP_KEY", "$THINGWORX_APP_KEY"),
        ("JOBS_AGENT_THINGWORX__APP_KEY", "thingworx.app_key"),
    ],
)
@pytest.mark.timeout(120)
async def test_a_given_key_is_named_not_printed(tmp_path: Path, env_name: str, named: str) -> None:
    banner = await _banner(tmp_path, **{env_name: KEY})
    assert KEY not in banner
    assert f"app key             from {named} (not shown" in banner
    assert '-H "appKey: $THINGWORX_APP_KEY"' in banner
