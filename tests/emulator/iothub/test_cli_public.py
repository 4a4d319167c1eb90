"""The command line (argument checks, logging, clean stop on SIGTERM, secrets kept off stdout)
and the package's public names."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import emulator.iothub
from emulator.iothub.__main__ import mask_key, parse_args

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


def _start(data_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], list[str]]:
    """``python -m emulator.iothub`` on any free ports, without a fleet, read up to its ``ready``
    line: the process and the lines it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator.iothub", "--data-dir", str(data_dir), "--rest-port",
         "0", "--mqtt-port", "0", "--no-fleet", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
            if line.startswith("ready"):
                break
    except BaseException:
        proc.kill()
        proc.wait(timeout=10)
        raise
    return proc, lines


def _stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM, then the rest of the output; the process must exit 0."""
    try:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0
        return out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    proc, lines = _start(tmp_path, "--devices", "3", "--log-format", "json")
    try:
        info = json.loads((tmp_path / "hub.json").read_text())
        assert sorted(info["devices"]) == ["device-0001", "device-0002", "device-0003"]
        assert info["restAddress"] in "".join(lines)
    finally:
        out = _stop(proc)
    assert "stopped" in out
    # Logs go through logsetup (tracebacks without locals), not structlog's default
    # rich tracebacks that print every frame's locals (tests/agent/test_logsetup_untrusted).
    assert '"event": "mqtt endpoint listening"' in "".join(lines) + out


@pytest.mark.parametrize("show", [False, True])
def test_owner_key_printed_only_when_asked(tmp_path: Path, show: bool) -> None:
    """Stdout is shared with the logs: the owner key is masked unless ``--show-secrets``."""
    proc, lines = _start(tmp_path, *(["--show-secrets"] if show else []))
    output = "".join(lines) + _stop(proc)
    owner = json.loads((tmp_path / "hub.json").read_text())["ownerConnectionString"]
    key = owner.split("SharedAccessKey=")[1]
    assert len(key) >= 16
    if show:
        assert f"  owner connection : {owner}\n" in output
    else:
        assert key not in output
        assert f"  owner connection : {mask_key(owner)} (whole in hub.json)\n" in output
        assert mask_key(owner).endswith("SharedAccessKey=***")


def test_mask_key() -> None:
    assert mask_key("HostName=h:1;SharedAccessKeyName=iothubowner;SharedAccessKey=abc=") == (
        "HostName=h:1;SharedAccessKeyName=iothubowner;SharedAccessKey=***"
    )
    assert mask_key("HostName=h;DeviceId=d;SharedAccessKey=k;x=y") == (
        "HostName=h;DeviceId=d;SharedAccessKey=***;x=y"
    )
