"""Issue 15: no log renderer prints the locals of untrusted data; an exception whose frame holds a
huge or deeply nested value is logged in bounded size and time, in both formats and by the IoT
Hub emulator's command line."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from agent.logsetup import configure_logging

ROOT = Path(__file__).resolve().parents[2]
HUGE_MARK = "untrusted-value-"


def deep_list(depth: int) -> list[Any]:
    top: list[Any] = []
    current = top
    for _ in range(depth):
        child: list[Any] = []
        current.append(child)
        current = child
    return top


def fail_with_hostile_locals() -> None:
    deep_report = {"k": deep_list(600)}  # noqa: F841 - the locals are the point
    deeper = deep_list(100_000)  # noqa: F841 - repr() of this raises RecursionError
    huge = HUGE_MARK * 200_000  # noqa: F841 - 3 MB
    raise ValueError("device report refused")


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_exception_with_hostile_locals_is_logged_small_and_fast(fmt: str) -> None:
    out = io.StringIO()
    configure_logging("INFO", fmt, stream=out)
    try:
        started = time.monotonic()
        try:
            fail_with_hostile_locals()
        except ValueError:
            structlog.get_logger("t").exception("handler failed")
        elapsed = time.monotonic() - started
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    assert "device report refused" in text
    assert HUGE_MARK not in text  # no local printed
    assert len(text) < 5_000
    assert elapsed < 2.0  # rich tracebacks with locals took ~28 s on the 600-deep value alone


def test_the_hub_emulator_cli_logs_through_configure_logging(tmp_path: Path) -> None:
    # Unconfigured, structlog renders exceptions as rich tracebacks with every frame's locals.
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
            "--no-fleet",
            "--log-format",
            "json",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "the emulator ended before it was ready"
            if line.startswith("ready"):
                break
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0
    assert '"event": "mqtt endpoint listening"' in err  # JSON lines from configure_logging
