"""``jobs-agent rollout plan|start|show|pause|resume|cancel`` against the whole chain
(:class:`AgentChain`: stand-in, real agent, IoT Hub emulator, simulated fleet): ``main()`` in
process for the commands, a real process for Ctrl-C, and a terminal console for the bars."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from agent import cli
from agent.cli.rollout import exit_status
from agent.settings import Settings
from services.rollouts import GET_ROLLOUT
from tests.support.chain import GATEWAY, AgentChain
from tests.support.network import fresh_loopback

pytestmark = pytest.mark.usefixtures("restore_logging")

PATCH = '{"properties":{"desired":{"fw":"2.1"}}}'


def _chain(tmp_path: Path, devices: int = 6) -> AgentChain:
    return AgentChain(tmp_path, devices=devices, mqtt_host=fresh_loopback())


def _ends(chain: AgentChain) -> list[str]:
    return ["--url", chain.standin.rest_url, "--app-key", chain.app_key]


async def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = await asyncio.to_thread(cli.main, ["rollout", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _json(out: str) -> Any:
    """The one JSON document of ``--output json`` (the in-process chain logs around it)."""
    (line,) = [x for x in out.splitlines() if x.startswith("{")]
    return json.loads(line)


async def _status(chain: AgentChain, rollout_id: str) -> dict[str, Any]:
    (row,) = await chain.rows(GATEWAY, GET_ROLLOUT, {"rolloutId": rollout_id})
    return dict(row)


async def test_start_wait_follows_the_waves_to_completion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with _chain(tmp_path) as chain:
        ids = tmp_path / "ids.txt"
        ids.write_text(
            "# ring 1\ndevice-0001\ndevice-0002\ndevice-0003, device-0004\ndevice-0005\n"
        )
        status, out, err = await _main(
            capsys, "plan", "--devices-file", str(ids), "--patch", PATCH, "--wave-size", "2",
            *_ends(chain),
        )  # fmt: skip
        assert status == cli.EXIT_OK, err
        assert "│ waveCount " in out and "[2,2,1]" in out, out
        assert await chain.rows(GATEWAY, "AzureIotDeviceJobFindRollouts", {}) == []

        status, out, err = await _main(
            capsys, "start", "--rollout-id", "fw21", "--devices-file", str(ids),
            "--patch", PATCH, "--wave-size", "2", "--wait", "--poll-interval", "0.2",
            *_ends(chain),
        )  # fmt: skip
        assert status == cli.EXIT_OK, (out, err)
        lines = out.splitlines()
        # Not a terminal: plain lines, one per change, for every wave.
        for wave, size in ((1, 2), (2, 2), (3, 1)):
            done = f"wave {wave}: {size}/{size} done, judged: {size} succeeded, 0 failed, 0 pending"
            assert done in lines, out
        assert not [x for x in lines if "wave" in x and "━" in x]  # no bar drawn into a pipe
        assert lines[-1] == (
            "rollout fw21 completed: wave 3 of 3, 5 succeeded, 0 failed, 0 pending"
        ), out
        assert "rollout fw21: waves" in out and "fw21-w3-a1-p1" in out
        assert (await _status(chain, "fw21"))["succeededCount"] == 5

        status, out, err = await _main(capsys, "show", "fw21", "--output", "json", *_ends(chain))
        assert status == cli.EXIT_OK, err
        doc = _json(out)
        assert doc["rollout"]["rows"][0]["status"] == "completed"
        assert [w["jobIds"] for w in doc["waves"]["rows"]] == [
            ["fw21-w1-a1-p1"], ["fw21-w2-a1-p1"], ["fw21-w3-a1-p1"],
        ]  # fmt: skip


async def test_pause_resume_cancel_and_the_exit_status_of_a_cancelled_rollout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with _chain(tmp_path) as chain:
        status, out, err = await _main(
            capsys, "start", "--rollout-id", "slow", "--query", "IS_DEFINED(deviceId)",
            "--patch", PATCH, "--wave-size", "2", "--pause-between-waves", "600",
            "--output", "json", *_ends(chain),
        )  # fmt: skip
        assert status == cli.EXIT_OK, err
        assert _json(out)["rows"][0]["status"] == "queued"
        # Pause once wave 1's hub job exists (stored with it in one transaction): a pause that
        # meets the job's create shows `paused` until the create returns, then `running` with
        # the pause kept for the wave's end, and the second pause below would be accepted.
        deadline = time.monotonic() + 30
        while (
            not (row := await _status(chain, "slow"))["currentJobId"] and not row["succeededCount"]
        ):
            assert time.monotonic() < deadline, row
            await asyncio.sleep(0.05)
        status, out, err = await _main(capsys, "pause", "slow", *_ends(chain))
        assert status == cli.EXIT_OK, err
        assert "slow" in out
        deadline = time.monotonic() + 30
        while (await _status(chain, "slow"))["status"] != "paused":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        status, out, err = await _main(capsys, "pause", "slow", *_ends(chain))
        assert status == cli.EXIT_FAILED and "paused" in err and len(err.splitlines()) == 1, err

        status, out, err = await _main(capsys, "resume", "slow", *_ends(chain))
        assert status == cli.EXIT_OK, err
        status, out, err = await _main(capsys, "cancel", "slow", *_ends(chain))
        assert status == cli.EXIT_OK, err
        status, out, err = await _main(
            capsys, "show", "slow", "--wait", "--poll-interval", "0.2", *_ends(chain)
        )
        assert status == cli.EXIT_FAILED, (out, err)  # cancelled: not a success
        assert "rollout slow cancelled" in out.splitlines()[-1], out
        assert "wave 1: 2/2 done, judged: 2 succeeded, 0 failed, 0 pending" in out, out
        assert out.count("│ waiting │") == 2, out  # waves 2 and 3 never planned

        status, out, err = await _main(capsys, "show", "nope", *_ends(chain))
        assert status == cli.EXIT_FAILED, err
        assert err.strip() == (
            "jobs-agent rollout show: AzureIotDeviceJobGetRollout: HTTP 404: "
            "rollout 'nope' does not exist"
        ), err


async def test_a_wrapper_rollout_and_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with _chain(tmp_path, devices=2) as chain:
        status, out, err = await _main(
            capsys, "start", "--wrapper", "SetTelemetryInterval", "intervalSeconds=9",
            "--devices", "device-0001,device-0002", "--rollout-id", "tele", "--wait",
            "--poll-interval", "0.2", "--output", "json", *_ends(chain),
        )  # fmt: skip
        assert status == cli.EXIT_OK, err
        doc = _json(out)
        assert doc["rollout"]["rows"][0]["succeededCount"] == 2
        (results,) = [await chain.rows(GATEWAY, "AzureIotDeviceJobQueryRolloutResults",
                                       {"rolloutId": "tele"})]  # fmt: skip
        assert {json.dumps(r["methodPayload"]) for r in results} == {'{"intervalSeconds": 9}'}

        for argv, words in (
            (["start", "--devices", "d1", "--patch", "{nope"], "--patch is not JSON"),
            (["start", "--devices", "d1"], "give --patch (a twin rollout) or --method"),
            (["start", "--devices", "d1", "--devices-file", "x", "--patch", "{}"], "not both"),
            (["start", "--devices", "d1", "--patch", "{}", "a=1"], "add --wrapper NAME"),
            (["start", "--wrapper", "Reboot", "--method", "m", "--devices", "d1"], "--method"),
            (["plan", "--wrapper", "Reboot", "--devices", "d1"], "plan has no wrapper form"),
        ):
            status, out, err = await _main(capsys, *argv, *_ends(chain))
            assert status == cli.EXIT_USAGE, (argv, err)
            assert len(err.strip().splitlines()) == 1 and words in err, (argv, err)
        # The agent's refusal of a bad input: one line, nothing created.
        status, out, err = await _main(
            capsys, "start", "--devices", "device-0001", "--patch", PATCH, "--wave-size", "0",
            *_ends(chain),
        )  # fmt: skip
        assert status == cli.EXIT_FAILED and "waveSize" in err and len(err.splitlines()) == 1
        rows = await chain.rows(GATEWAY, "AzureIotDeviceJobFindRollouts", {})
        assert [r["rolloutId"] for r in rows] == ["tele"]


async def test_a_terminal_gets_a_progress_bar_per_wave(tmp_path: Path) -> None:
    async with _chain(tmp_path, devices=4) as chain:
        argv = [
            "rollout", "start", "--rollout-id", "bars", "--query", "IS_DEFINED(deviceId)",
            "--patch", PATCH, "--wave-size", "2", "--wait", "--poll-interval", "0.2",
            *_ends(chain),
        ]  # fmt: skip
        args: argparse.Namespace = cli.build_parser().parse_args(argv)
        out = io.StringIO()
        console = Console(file=out, force_terminal=True, color_system=None, width=120)
        status = await cli.rollout(Settings(), args, console)
        text = out.getvalue()
        assert status == cli.EXIT_OK, text
        bars = [x for x in text.splitlines() if "wave" in x and "━" in x]
        assert any("wave 1" in x and "2/2" in x for x in bars), text  # rich's bars, per wave
        assert any("wave 2" in x and "2/2" in x for x in bars), text
        assert "judged: 2 succeeded, 0 failed, 0 pending" in text


async def test_ctrl_c_during_wait_leaves_the_rollout_running(tmp_path: Path) -> None:
    async with _chain(tmp_path, devices=4) as chain:
        await chain.rows(
            GATEWAY,
            "AzureIotDeviceJobStartRollout",
            {"rolloutId": "held", "type": "twinUpdate", "queryCondition": "IS_DEFINED(deviceId)",
             "patch": {"tags": {"a": 1}}, "waveSize": 2, "pauseBetweenWavesSeconds": 600},
        )  # fmt: skip
        argv = [sys.executable, "-m", "agent.cli", "rollout", "show", "held", "--wait",
                "--poll-interval", "0.2", *_ends(chain)]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "COLUMNS": "100"},
        )
        assert proc.stdout is not None
        seen = b""
        async with asyncio.timeout(30):
            while b"wave 1:" not in seen:  # following: the first wave line is out
                seen += await proc.stdout.read(64)
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(15):
            out, err = await proc.communicate()
        assert proc.returncode == cli.EXIT_INTERRUPTED == 130, (seen + out, err)
        assert err.decode().strip() == (
            "stopped watching rollout held; it keeps running in the agent. Follow it again with: "
            "jobs-agent rollout show held --wait"
        )
        assert (await _status(chain, "held"))["status"] in ("queued", "running")


def test_exit_status_of_a_final_row() -> None:
    assert exit_status({"status": "completed", "failedCount": 0}) == cli.EXIT_OK
    assert exit_status({"status": "completed", "failedCount": 2}) == cli.EXIT_DEVICES_FAILED
    for status in ("aborted", "cancelled", "failed"):
        assert exit_status({"status": status, "failedCount": 0}) == cli.EXIT_FAILED
