"""Fixtures shared by the agent's tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """main() and configure_logging() configure structlog and the root logger for the process;
    give them back, so later tests do not log into this test's (closed) captured streams.

    Used by the modules that configure logging: ``pytestmark = pytest.mark.usefixtures(...)``.
    """
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)
