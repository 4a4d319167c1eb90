"""The agent's error root: every exception the agent's packages raise derives from AgentError."""

from __future__ import annotations

__all__ = ["AgentError", "ConfigError"]


class AgentError(Exception):
    """Base class of every exception the agent raises."""


class ConfigError(AgentError):
    """The configuration cannot work: a setting is missing, malformed or contradictory."""
