"""``python -m emulator.iothub`` keeps the owner key off its stdout (shared with the logs) unless
asked with ``--show-secrets``; hub.json holds the whole connection string."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulator.iothub.__main__ import mask_key

ROOT = Path(__file__).resolve().parents[3]


def _startup_output(data_dir: Path, *extra: str) -> str:
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
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0
        return "".join(lines) + out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.parametrize("show", [False, True])
def test_owner_key_printed_only_when_asked(tmp_path: Path, show: bool) -> None:
    output = _startup_output(tmp_path, *(["--show-secrets"] if show else []))
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
