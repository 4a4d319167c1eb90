"""Issue 15: no log renderer prints the locals of untrusted data; an exception whose frame holds a
huge or deeply nested value is logged in bounded size and time, in both formats. (The IoT Hub
emulator's command line logs through this configuration: tests/emulator/iothub/
test_cli_public.py.)"""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
import structlog

from logsetup import MAX_FIELD_DEPTH, configure_logging

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
    # rich tracebacks with locals took ~28 s on the 600-deep value alone; 10 s leaves room for a
    # loaded machine (2.98 s was seen once under load with a 2 s budget).
    assert elapsed < 10.0


@pytest.mark.parametrize("fmt", ["console", "json"])
@pytest.mark.parametrize("depth", [17, 1_000, 100_000])
def test_a_deep_untrusted_field_is_logged_cut_at_the_field_depth(fmt: str, depth: int) -> None:
    # The secret-redacting processor walks every field: nested 100,000 deep it used to recurse
    # until RecursionError (and a renderer would too); deeper parts are now a marker.
    out = io.StringIO()
    configure_logging("INFO", fmt, stream=out)
    try:
        structlog.get_logger("t").info("reported", report={"k": deep_list(depth)}, token="s3cr3t")
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    assert text.count("\n") == 1 and "reported" in text
    assert f"nested deeper than {MAX_FIELD_DEPTH} levels" in text
    assert "s3cr3t" not in text and len(text) < 2_000
