"""Fixtures of the IoT Hub client's tests: the scripted HTTPS server (tests/support)."""

from __future__ import annotations

from tests.support.scripted_hub import scripted

__all__ = ["scripted"]
