"""The ``jobs-agent`` entry point: parse the arguments, load the settings, configure logging
once, and hand over to ``run``, ``check``, ``call`` or ``rollout``."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console

from agent.cli.args import build_parser
from agent.cli.call import call
from agent.cli.check import check
from agent.cli.rollout import rollout
from agent.cli.run import run
from agent.settings import Settings, load_settings, settings_errors
from logsetup import configure_logging

__all__ = ["main"]

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
    if args.command == "rollout":
        return asyncio.run(rollout(settings, args, console))
    return asyncio.run(call(settings, args, console))
