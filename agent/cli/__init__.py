"""The ``jobs-agent`` command line: a package of small modules, each one job.

- :mod:`agent.cli.args`: the argument parser, the parsing of inputs, exit statuses;
- :mod:`agent.cli.run`: ``run``'s lifecycle (signals, drain, banner) around
  :class:`~agent.app.AgentApp` (or :class:`~agent.embedded.EmbeddedRun`);
- :mod:`agent.cli.check`: ``check``, with :mod:`agent.cli.hints` (what to fix);
- :mod:`agent.cli.call`: ``call``, the REST client that follows jobs;
- :mod:`agent.cli.tables`: InfoTables as rich tables.

This module holds :func:`main` (the ``jobs-agent`` entry point) and nothing else of its own.

Sub-commands: ``run`` (the agent; with nothing configured, the embedded run against the bundled
IoT Hub emulator and ThingWorx stand-in), ``check`` (validate the configuration and reach both
ends), ``call`` (call a service through ThingWorx's REST convention). Logging is configured here,
once.

Rules:
- Exit status: 0 success (and a run stopped by SIGINT/SIGTERM), 1 a failure at run time (an end
  refused or unreachable, a call answered with an error; with ``--wait``, a job that failed or
  was cancelled), 2 a configuration or usage error; ``call --wait`` only: 3 the job completed but
  some devices failed, 4 the wait ended before the job did, 130 Ctrl-C stopped the watching (the
  job goes on on the hub).
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

import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console

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
from agent.cli.run import KEY_GENERATED, embedded_app_key, run
from agent.cli.tables import infotable_table
from agent.logsetup import configure_logging
from agent.settings import Settings, load_settings, settings_errors

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
    "run",
]

_PIPED_WIDTH = 160


def _load(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except FileNotFoundError as exc:
        print(f"jobs-agent: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except ValidationError as exc:
        for line in settings_errors(exc, config):
            print(f"jobs-agent: configuration error: {line}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jobs-agent`` console script; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command == "call" and all("=" in e and not e.startswith("-") for e in extra):
            args.inputs = [*args.inputs, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    settings = _load(args.config)
    # Piped output (a file, a CI log) gets wide tables instead of rich's 80 columns.
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    console = Console(soft_wrap=True, width=_PIPED_WIDTH if piped else None)
    if args.command == "run":
        configure_logging(settings.log.level, settings.log.format)
        return asyncio.run(run(settings, console))
    if args.command == "check":
        level = "DEBUG" if settings.log.level == "DEBUG" else "WARNING"
        configure_logging(level, settings.log.format)
        return asyncio.run(check(settings, console, force_bind=args.bind))
    configure_logging("WARNING", settings.log.format)
    return asyncio.run(call(settings, args, console))
