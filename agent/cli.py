"""The ``jobs-agent`` command line.

Sub-commands: ``run`` (the agent; with nothing configured, the embedded run against the bundled
IoT Hub emulator and ThingWorx stand-in), ``check`` (validate the configuration and reach both
ends), ``call`` (call a service through ThingWorx's REST convention). Logging is configured here,
once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from agent.logsetup import configure_logging
from agent.settings import Settings, load_settings

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobs-agent", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None, help="TOML configuration file")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the agent (embedded emulators when nothing is configured)")
    sub.add_parser("check", help="validate the configuration and reach both ends")
    return parser


def _load(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except (ValidationError, FileNotFoundError) as exc:
        print(f"jobs-agent: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jobs-agent`` console script."""
    args = _parser().parse_args(argv)
    settings = _load(args.config)
    configure_logging(settings.log.level, settings.log.format)
    print(f"jobs-agent: '{args.command}' is not available yet in this build", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
