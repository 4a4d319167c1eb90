"""The agent's name for the shared structlog set-up, :mod:`logsetup` (a pure core both the agent
and the bundled emulators configure their logging with).

A thin re-export kept while ``agent/cli`` imports ``agent.logsetup``; new code imports
:mod:`logsetup` directly.
"""

from __future__ import annotations

from logsetup import REDACTED, add_logger_name, configure_logging, redact_secrets

__all__ = ["REDACTED", "add_logger_name", "configure_logging", "redact_secrets"]
