"""The ``jobs-agent`` command line: a package of small modules, each one job.

- :mod:`agent.cli.args`: the argument parser, the parsing of inputs, exit statuses;
- :mod:`agent.cli.run`: ``run``'s lifecycle (signals, drain, banner) around
  :class:`~agent.app.AgentApp` (or :class:`~agent.embedded.EmbeddedRun`);
- :mod:`agent.cli.check`: ``check``, with :mod:`agent.cli.hints` (what to fix);
- :mod:`agent.cli.call`: ``call``, the REST client that follows jobs;
- :mod:`agent.cli.rollout`: ``rollout plan|start|show|pause|resume|cancel``, the rollout
  services through the same REST client, following rollouts wave by wave;
- :mod:`agent.cli.tables`: InfoTables as rich tables.

- :mod:`agent.cli.entry`: :func:`main`, the ``jobs-agent`` entry point (``agent.cli:main``).

This module only re-exports the public names.

Sub-commands: ``run`` (the agent; with nothing configured, the embedded run against the bundled
IoT Hub emulator and ThingWorx stand-in), ``check`` (validate the configuration and reach both
ends), ``call`` (call a service through ThingWorx's REST convention), ``rollout`` (the gateway
Thing's rollout services). Logging is configured here, once.

Rules:
- Exit status: 0 success (and a run stopped by SIGINT/SIGTERM), 1 a failure at run time (an end
  refused or unreachable, a call answered with an error; with ``--wait``, a job that failed or
  was cancelled), 2 a configuration or usage error; ``call --wait`` only: 3 the job completed but
  some devices failed, 4 the wait ended before the job did, 130 Ctrl-C stopped the watching (the
  job goes on on the hub). ``rollout --wait`` the same for a rollout: 1 also when it ended
  aborted or cancelled, 3 completed with failed devices.
- Tables never cut an id (``jobId``, ``deviceId``): other columns fold first.
- Human output (the embedded banner, check's steps, call's tables) goes to stdout through rich;
  logs go to stderr through structlog; errors are one line saying what to fix.
- ``run`` stops cleanly on SIGINT and SIGTERM: the agent takes no new calls, lets those in flight
  finish and answers them (up to ``thingworx.drain_timeout``), UNBINDs and closes, then the
  health server stops, then (embedded) the stand-in, the fleet and the emulator; nothing is left
  running.
- The embedded run's settings are passed as objects; the process environment is never written.
"""

from __future__ import annotations

from agent.cli.args import (
    APP_KEY_ENV,
    EXIT_DEVICES_FAILED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_WAIT_TIMEOUT,
    build_parser,
    parse_inputs,
    rest_root,
)
from agent.cli.call import CallFailed, WaitTimeout, call, call_service
from agent.cli.check import check
from agent.cli.entry import main
from agent.cli.rollout import rollout
from agent.cli.run import KEY_GENERATED, embedded_app_key, run
from agent.cli.tables import infotable_table

__all__ = [
    "APP_KEY_ENV",
    "EXIT_DEVICES_FAILED",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXIT_WAIT_TIMEOUT",
    "KEY_GENERATED",
    "CallFailed",
    "WaitTimeout",
    "build_parser",
    "call",
    "call_service",
    "check",
    "embedded_app_key",
    "infotable_table",
    "main",
    "parse_inputs",
    "rest_root",
    "rollout",
    "run",
]
