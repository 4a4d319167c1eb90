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
    "read_device_ids",
    "rest_root",
    "rollout_inputs",
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
by default); `jobs-agent rollout` plans, starts and follows rollouts (waves of hub jobs) the
same way; `jobs-agent check` validates a configuration and reaches both ends."""

_EXAMPLES = """\
examples:
  jobs-agent run
  jobs-agent check --config config/agent.toml
  jobs-agent call AzureIotDeviceJobFindJobs status=completed
  jobs-agent call AzureIotDeviceJobScheduleDeviceMethodJob methodName=reboot \\
      "queryCondition=deviceId IN ['device-0001','device-0002']" --wait
  jobs-agent call AzureIotDeviceJobGetJob jobId=j1 --output json | jq '.rows[0].summary'
  jobs-agent rollout start --method reboot --query "IS_DEFINED(deviceId)" --wave-size 10 --wait

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
    _add_rollout(sub)
    return parser


ROLLOUT_OPTIONS: tuple[tuple[str, str, type, str], ...] = (
    ("--rollout-id", "rolloutId", str, "the new rollout's id (default: a new UUID)"),
    ("--type", "type", str, "twinUpdate or deviceMethod (default: from --patch or --method)"),
    ("--query", "queryCondition", str, "WHERE part of a twin query selecting the devices"),
    ("--patch", "patch", str, "twin patch (JSON) of a twinUpdate rollout"),
    ("--method", "methodName", str, "direct method of a deviceMethod rollout"),
    ("--payload", "payload", str, "the method's payload (JSON)"),
    ("--response-timeout", "responseTimeoutInSeconds", int, "s per device answer (5..300)"),
    ("--connect-timeout", "connectTimeoutInSeconds", int, "s for a device to connect (0..300)"),
    ("--wave-size", "waveSize", int, "devices in the first wave (default 100)"),
    ("--growth-factor", "growthFactor", float, "each wave's size over the last (1..10)"),
    ("--max-wave-size", "maxWaveSize", int, "the cap on any wave"),
    ("--max-failure-percent", "maxFailurePercent", float, "abort above this failed share"),
    ("--retries", "retries", int, "retries of retryable failures (0..10)"),
    ("--retry-delay", "retryDelaySeconds", int, "least seconds before a retry round"),
    ("--pause-between-waves", "pauseBetweenWavesSeconds", int, "seconds between waves"),
    ("--priority", "priority", int, "1 (first) .. 1000 (last), default 500"),
    ("--start-time", "startTime", str, "when the first wave may start (ISO-8601 UTC)"),
    ("--window-start", "windowStart", str, "daily window start, HH:MM UTC"),
    ("--window-end", "windowEnd", str, "daily window end, HH:MM UTC"),
)
"""``rollout plan|start``'s options: (flag, service input, type, help); JSON options are text
here, parsed by :func:`rollout_inputs`."""

_ROLLOUT_EXAMPLES = """\
examples:
  jobs-agent rollout plan --query "tags.ring = 1" --patch '{"properties":{"desired":{"fw":"2.1"}}}'
  jobs-agent rollout start --rollout-id fw21 --devices-file ids.txt \\
      --patch '{"properties":{"desired":{"fw":"2.1"}}}' --wave-size 100 --growth-factor 2 --wait
  jobs-agent rollout start --method reboot --query "IS_DEFINED(deviceId)" --retries 2
  jobs-agent rollout start --wrapper SetTelemetryInterval intervalSeconds=60 --devices d1,d2
  jobs-agent rollout show fw21 --wait
  jobs-agent rollout pause fw21; jobs-agent rollout resume fw21 --wait
  jobs-agent rollout cancel fw21 --output json

exit status: 0 success (with --wait: the rollout completed and every device succeeded),
  1 the call failed, or the rollout ended aborted, failed or cancelled, 2 usage error,
  3 completed but some devices failed, 4 gave up waiting (--timeout; the rollout goes on),
  130 stopped by Ctrl-C (the rollout goes on in the agent)"""


def _add_rollout(sub: Any) -> None:
    rollout = sub.add_parser(
        "rollout",
        help="plan, start, show, pause, resume or cancel a rollout (waves of hub jobs)",
        description="Rollouts (docs/rollouts.md) through the gateway Thing's rollout services, "
        "called through ThingWorx's REST convention as `call` does.",
        epilog=_ROLLOUT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = rollout.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(parser: argparse.ArgumentParser, *, wait: bool) -> None:
        parser.add_argument("--thing", default=None, help="the gateway Thing (default: settings)")
        parser.add_argument(
            "--url", default=None, help="ThingWorx base URL (default: the embedded stand-in)"
        )
        parser.add_argument(
            "--app-key", default=None, help=f"application key (default: ${APP_KEY_ENV})"
        )
        parser.add_argument(
            "--output",
            choices=("table", "json"),
            default="table",
            help="table (default) or json: the InfoTable JSON for scripts (show and --wait: "
            'one object {"rollout": ..., "waves": ...}, no progress bar)',
        )
        if wait:
            parser.add_argument(
                "--wait",
                action="store_true",
                help="follow the rollout to a final status, with a progress bar per wave",
            )
            parser.add_argument(
                "--timeout", type=float, default=None, help="--wait deadline, s (default: none)"
            )
            parser.add_argument(
                "--poll-interval", type=float, default=1.0, help="--wait reading period, s"
            )

    def described(name: str, text: str, **kwargs: Any) -> argparse.ArgumentParser:
        return actions.add_parser(  # type: ignore[no-any-return]
            name,
            help=text,
            description=text,
            epilog=_ROLLOUT_EXAMPLES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kwargs,
        )

    for action, text in (
        ("plan", "dry run: the devices, waves and estimated duration; creates nothing"),
        ("start", "start a rollout (the target once, then waves of hub jobs)"),
    ):
        parser = described(action, text)
        target = parser.add_argument_group("target (one of)")
        target.add_argument(
            "--devices",
            metavar="IDS",
            default=None,
            help="device ids: comma-separated, or a JSON array",
        )
        target.add_argument(
            "--devices-file",
            metavar="FILE",
            type=Path,
            default=None,
            help="device ids: one per line (# comments), or a JSON array",
        )
        options = parser.add_argument_group("operation and plan (docs/rollouts.md, Inputs)")
        for flag, name, kind, text_ in ROLLOUT_OPTIONS:
            group = target if flag == "--query" else options
            # The metavar is the service input the option sets (--wave-size waveSize).
            group.add_argument(flag, dest=name, metavar=name, type=kind, default=None, help=text_)
        options.add_argument(
            "--retry-device-errors",
            dest="retryDeviceErrors",
            action="store_true",
            default=None,
            help="also retry devices that answered with an error status",
        )
        options.add_argument(
            "--wrapper",
            metavar="NAME",
            default=None,
            help="roll out a wrapper service: its <NAME>Rollout form, typed inputs as name=value",
        )
        options.add_argument(
            "inputs", nargs="*", metavar="name=value", help="the wrapper's typed inputs"
        )
        common(parser, wait=action == "start")
    show = described("show", "the rollout and its waves")
    show.add_argument("rollout_id", metavar="ROLLOUT_ID")
    common(show, wait=True)
    for action, text in (
        ("pause", "pause at the next wave boundary"),
        ("resume", "resume a paused rollout"),
        ("cancel", "cancel at the next wave boundary (and the wave's job if not started)"),
    ):
        parser = described(action, text)
        parser.add_argument("rollout_id", metavar="ROLLOUT_ID")
        common(parser, wait=action == "resume")


def read_device_ids(text: str, source: str) -> list[str]:
    """Device ids from ``--devices`` or a ``--devices-file``: a JSON array, else one id per line
    (``#`` starts a comment) or comma-separated.

    Raises:
        ValueError: no device id, or a JSON array of something else than text.
    """
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            ids = json.loads(stripped)
        except ValueError as exc:
            raise ValueError(f"{source} is not a JSON array: {exc}") from None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"{source} must be a JSON array of device ids (strings)")
    else:
        ids = []
        for line in stripped.splitlines():
            line = line.split("#", 1)[0]
            ids.extend(part.strip() for part in line.split(",") if part.strip())
    if not ids:
        raise ValueError(f"{source} names no device")
    return list(ids)


def rollout_inputs(args: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    """The service (None: ``AzureIotDeviceJobStartRollout``/``PlanRollout``; else the wrapper's
    ``<Name>Rollout``) and its inputs, from ``rollout plan|start``'s options.

    Raises:
        ValueError: unusable options (JSON that does not parse, a file that cannot be read, both
            --devices and --devices-file, typed inputs without --wrapper...), one line each.
    """
    inputs: dict[str, Any] = {}
    for flag, name, _, _ in ROLLOUT_OPTIONS:
        value = getattr(args, name, None)
        if value is None:
            continue
        if name in ("patch", "payload"):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"{flag} is not JSON: {exc}") from None
        inputs[name] = value
    if args.retryDeviceErrors:
        inputs["retryDeviceErrors"] = True
    if args.devices is not None and args.devices_file is not None:
        raise ValueError("give --devices or --devices-file, not both")
    if args.devices is not None:
        inputs["devices"] = read_device_ids(args.devices, "--devices")
    elif args.devices_file is not None:
        try:
            text = args.devices_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--devices-file {args.devices_file} cannot be read: {exc}") from None
        inputs["devices"] = read_device_ids(text, f"--devices-file {args.devices_file}")
    typed = parse_inputs(args.inputs)
    if args.wrapper is None:
        if typed:
            raise ValueError("name=value inputs are a wrapper's typed inputs: add --wrapper NAME")
        if "type" not in inputs:
            if "patch" in inputs and "methodName" not in inputs:
                inputs["type"] = "twinUpdate"
            elif "methodName" in inputs and "patch" not in inputs:
                inputs["type"] = "deviceMethod"
            else:
                raise ValueError("give --patch (a twin rollout) or --method (a method rollout)")
        return None, inputs
    for flag, name in (("--type", "type"), ("--patch", "patch"), ("--method", "methodName"),
                       ("--payload", "payload")):  # fmt: skip
        if name in inputs:
            raise ValueError(f"{flag} does not go with --wrapper: the wrapper names the method")
    clash = sorted(set(typed) & set(inputs))
    if clash:
        raise ValueError(f"input {clash[0]!r} is given twice (as an option and as name=value)")
    return f"{args.wrapper}Rollout", {**typed, **inputs}


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
