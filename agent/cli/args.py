"""``jobs-agent``'s arguments and the parsing of what the user typed: the argument parser, the
``name=value`` service inputs, the REST root of a ``--url``, the app key's sources, and the exit
statuses every sub-command returns.

Rules: a value the user typed that cannot be used raises :class:`ValueError` with one line saying
which and what to type instead; nothing here does I/O.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent import __version__
from agent.settings import Settings

__all__ = [
    "APP_KEY_ENV",
    "EXIT_DEVICES_FAILED",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXIT_WAIT_TIMEOUT",
    "app_key_for",
    "build_parser",
    "parse_inputs",
    "rest_root",
]

APP_KEY_ENV = "THINGWORX_APP_KEY"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DEVICES_FAILED = 3
EXIT_WAIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130

_DESCRIPTION = """\
The edge agent that runs Azure IoT Hub device jobs as ThingWorx remote services.

With nothing configured, `jobs-agent run` starts the embedded run: a bundled IoT Hub emulator
with a simulated fleet, a ThingWorx stand-in with a web console, and the agent between them.
`jobs-agent call` calls a service through ThingWorx's REST convention (the embedded stand-in
by default); `jobs-agent check` validates a configuration and reaches both ends."""

_EXAMPLES = """\
examples:
  jobs-agent run
  jobs-agent check --config config/agent.toml
  jobs-agent call AzureIotDeviceJobFindJobs status=completed
  jobs-agent call AzureIotDeviceJobScheduleDeviceMethodJob methodName=reboot \\
      "queryCondition=deviceId IN ['device-0001','device-0002']" --wait
  jobs-agent call AzureIotDeviceJobGetJob jobId=j1 --output json | jq '.rows[0].summary'

exit status of call --wait: 0 every device succeeded, 1 the call or the job failed,
  2 usage or configuration error, 3 completed but some devices failed,
  4 gave up waiting (the job goes on), 130 stopped by Ctrl-C (the job goes on)"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobs-agent",
        description=_DESCRIPTION,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", type=Path, default=None, help="TOML configuration file")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the agent (embedded emulators when nothing is configured)")
    check = sub.add_parser("check", help="validate the configuration and reach both ends")
    check.add_argument(
        "--bind",
        action="store_true",
        help="try the BIND even when an agent for the same ThingWorx runs here (it takes the "
        "gateway Thing from that agent: ThingWorx keeps the last bind)",
    )
    call = sub.add_parser(
        "call",
        help="call a service through ThingWorx's REST convention",
        description="Call SERVICE on a Thing: POST {url}/Thingworx/Things/{thing}/Services/"
        "{service} with the inputs as JSON (values parsed as JSON when they parse, else strings).",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    call.add_argument("service", help="service name, e.g. AzureIotDeviceJobFindJobs")
    call.add_argument("inputs", nargs="*", metavar="name=value", help="service inputs")
    call.add_argument("--thing", default=None, help="Thing name (default: the gateway Thing)")
    call.add_argument(
        "--url", default=None, help="ThingWorx base URL (default: the embedded stand-in)"
    )
    call.add_argument("--app-key", default=None, help=f"application key (default: ${APP_KEY_ENV})")
    call.add_argument(
        "--wait", action="store_true", help="follow a scheduled job to its end, then its results"
    )
    call.add_argument(
        "--timeout", type=float, default=None, help="--wait deadline, s (default: job window+120)"
    )
    call.add_argument("--poll-interval", type=float, default=1.0, help="--wait GetJob period, s")
    call.add_argument(
        "--output",
        choices=("table", "json"),
        default="table",
        help="table (default) or json: the InfoTable JSON for scripts (with --wait, one object "
        '{"job": ..., "results": ...} and no progress bar)',
    )
    return parser


def parse_inputs(pairs: Sequence[str]) -> dict[str, Any]:
    """Turn ``name=value`` arguments into a JSON object of service inputs.

    A value is parsed as JSON when it parses (``5`` → 5, ``true`` → True, ``{"a":1}`` → a dict,
    ``"5"`` → the string 5), else kept as the string given (``reboot``, ``deviceId='d1'``).
    Only the first ``=`` splits, so values may contain ``=``.

    Raises:
        ValueError: an argument without ``=``, an empty name, or a name given twice.
    """
    inputs: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"input {pair!r} must be name=value")
        if name in inputs:
            raise ValueError(f"input {name!r} is given twice")
        try:
            inputs[name] = json.loads(text)
        except ValueError:
            inputs[name] = text
    return inputs


def rest_root(url: str) -> str:
    """The REST convention's root (``.../Thingworx``) of a ThingWorx base URL.

    ``http://host:8080``, ``http://host:8080/`` and ``http://host:8080/Thingworx`` all give
    ``http://host:8080/Thingworx``.

    Raises:
        ValueError: not an http:// or https:// URL.
    """
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--url {url!r} must start with http:// or https://")
    return url if url.endswith("/Thingworx") else url + "/Thingworx"


def app_key_for(settings: Settings, given: str | None = None) -> str:
    """--app-key, else $THINGWORX_APP_KEY, else thingworx.app_key (may be empty)."""
    return given or os.environ.get(APP_KEY_ENV) or settings.thingworx.app_key.get_secret_value()
