"""The command line (argument checks, logging, clean stop on SIGTERM) and the public names."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import emulator.iothub
from emulator.iothub.__main__ import parse_args

ROOT = Path(__file__).resolve().parents[3]


def test_public_names_resolve() -> None:
    for name in emulator.iothub.__all__:
        assert getattr(emulator.iothub, name) is not None


def test_arguments_and_their_checks() -> None:
    args = parse_args(["--data-dir", "d", "--devices", "5", "--no-fleet", "--tier", "S2"])
    assert (args.devices, args.fleet, args.tier, args.rest_port, args.mqtt_port) == (
        5,
        False,
        "S2",
        8443,
        8883,
    )
    for bad in (["--devices", "-1"], ["--offline-share", "1.5"], ["--tier", "S9"]):
        with pytest.raises(SystemExit):
            parse_args(["--data-dir", "d", *bad])


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulator.iothub",
            "--data-dir",
            str(tmp_path),
            "--rest-port",
            "0",
            "--mqtt-port",
            "0",
            "--devices",
            "3",
            "--no-fleet",
            "--log-format",
            "json",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + 30
        lines: list[str] = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
            if line.startswith("ready"):
                break
        info = json.loads((tmp_path / "hub.json").read_text())
        assert sorted(info["devices"]) == ["device-0001", "device-0002", "device-0003"]
        assert info["restAddress"] in "".join(lines)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0
        assert "stopped" in out
        # Logs go through agent.logsetup (tracebacks without locals), not structlog's default
        # rich tracebacks that print every frame's locals (tests/agent/test_logsetup_untrusted).
        assert '"event": "mqtt endpoint listening"' in "".join(lines) + out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
