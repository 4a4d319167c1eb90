"""``python -m emulator.iothub``: run the IoT Hub emulator (and a simulated fleet) until stopped.

Example::

    python -m emulator.iothub --data-dir ./hub --devices 100 --offline-share 0.1

It prints where things are, writes DIR/hub.json, logs with structlog to stderr (tracebacks as
plain text, never with locals), and stops cleanly on SIGINT or SIGTERM. The last line it prints
at start-up begins with ``ready``, for scripts that wait for it.

Rules: stdout is shared with the logs, so the owner connection string is printed with its key
masked, pointing at DIR/hub.json where the whole string is; ``--show-secrets`` prints it whole.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from emulator.iothub.fleet import Fleet
from emulator.iothub.hub import IoTHubEmulator
from emulator.iothub.jobs.tiers import TIERS
from logsetup import configure_logging

__all__ = ["main", "mask_key", "parse_args", "run"]

_KEY = re.compile(r"(SharedAccessKey=)[^;]*", re.IGNORECASE)


def mask_key(connection_string: str) -> str:
    """``connection_string`` with its ``SharedAccessKey`` value replaced by ``***``."""
    return _KEY.sub(r"\1***", connection_string)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m emulator.iothub",
        description="Run a local Azure IoT Hub emulator (service REST API + device MQTT).",
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="state directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve (default 127.0.0.1)")
    parser.add_argument("--rest-port", type=int, default=8443, help="HTTPS port (0: any free)")
    parser.add_argument("--mqtt-port", type=int, default=8883, help="MQTT/TLS port (SDK: 8883)")
    parser.add_argument("--devices", type=int, default=0, help="make device-0001..device-N")
    parser.add_argument("--tier", choices=["S1", "S2", "S3"], default=None, help="job quotas")
    parser.add_argument(
        "--units",
        type=int,
        default=1,
        help="the hub's units with --tier: the job device-operation pace scales (S3: 50/s each)",
    )
    parser.add_argument(
        "--fleet",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="connect simulated devices for the N devices (default on)",
    )
    parser.add_argument(
        "--offline-share", type=float, default=0.0, help="share of fleet devices left offline"
    )
    parser.add_argument(
        "--answer-delay", type=float, default=0.0, help="seconds a simulated device takes to answer"
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--log-format", default="auto", choices=["auto", "console", "json"])
    parser.add_argument(
        "--show-secrets",
        action="store_true",
        help="print the owner connection string with its key (default: masked; it is in hub.json)",
    )
    args = parser.parse_args(argv)
    if args.devices < 0:
        parser.error("--devices must be 0 or more")
    if args.tier is not None:
        try:
            TIERS[args.tier].with_units(args.units)
        except ValueError as exc:
            parser.error(f"--units: {exc}")
    elif args.units != 1:
        parser.error("--units needs --tier")
    if not 0.0 <= args.offline_share <= 1.0:
        parser.error("--offline-share must be within 0..1")
    if args.answer_delay < 0:
        parser.error("--answer-delay must be 0 or more")
    return args


async def run(args: argparse.Namespace) -> None:
    """Start the hub (and fleet), print where things are, wait for SIGINT/SIGTERM, stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    hub = IoTHubEmulator(
        args.data_dir,
        host=args.host,
        rest_port=args.rest_port,
        mqtt_port=args.mqtt_port,
        tier=args.tier,
        units=args.units,
    )
    fleet: Fleet | None = None
    async with hub:
        ids = hub.ensure_devices(args.devices)
        if args.fleet and ids:
            fleet = hub.fleet(ids, offline_share=args.offline_share, answer_delay=args.answer_delay)
            await fleet.start()
        try:
            print(f"IoT Hub emulator, data in {hub.data_dir}")
            print(f"  service REST API : {hub.rest_url}")
            print(f"  device MQTT/TLS  : {hub.host}:{hub.mqtt_port}")
            print(f"  CA to trust      : {hub.ca_pem_path}")
            print(f"  connection info  : {hub.hub_file}")
            owner = hub.owner_connection_string
            if args.show_secrets:
                print(f"  owner connection : {owner}")
            else:
                print(f"  owner connection : {mask_key(owner)} (whole in {hub.hub_file.name})")
            online = len(fleet.online_ids()) if fleet is not None else 0
            print(f"  devices          : {len(hub.registry)} registered, {online} simulated online")
            print("ready (Ctrl-C to stop)", flush=True)
            await stop.wait()
        finally:
            if fleet is not None:
                await fleet.stop()
    print("stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = parse_args(argv)
    # structlog's unconfigured default renders tracebacks with every frame's locals: never that.
    configure_logging(args.log_level, args.log_format)
    try:
        asyncio.run(run(args))
    except OSError as exc:
        print(
            f"error: {exc} (is another emulator using the same address and port?)", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
