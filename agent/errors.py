"""The agent's exception root: every exception of the agent's own trees is an :class:`AgentError`.

::

    AgentError                      base of everything the agent raises on purpose
    ├── ConfigError                 the configuration is wrong (exit status 2)
    │   └── WrapperConfigError      a wrapper declaration file (wrappers.declarations)
    ├── ChannelError                the AlwaysOn channel (agent.channel.errors)
    ├── IotHubError                 the IoT Hub client (agent.iothub.errors), with LaneFull and
    │                               CallTooLarge
    ├── RegistryError               a Thing or service declaration refused (agent.registry)
    ├── ServiceError                a service call that failed (agent.registry)
    └── EmbeddedError               an embedded end could not start (agent.embedded)

The pure codec package :mod:`agent.alwayson` keeps its own root, ``AlwaysOnError``: it imports
nothing of ours, this module included.

Rules: this module imports nothing; each tree keeps its own module and only its base class
changes, so ``except IotHubError`` and the like keep catching what they caught.
"""

from __future__ import annotations

__all__ = ["AgentError", "ConfigError"]


class AgentError(Exception):
    """Base class of every exception the agent's own code raises on purpose."""


class ConfigError(AgentError):
    """The configuration is wrong: the message names the setting or file and what to change."""
