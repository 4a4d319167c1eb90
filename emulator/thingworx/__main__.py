"""``python -m emulator.thingworx``: run the ThingWorx stand-in alone until stopped.

Example::

    python -m emulator.thingworx --host 127.0.0.1 --port 8080 --app-key KEY

The application key may also come from the environment variable ``THINGWORX_APP_KEY`` (so it is
not visible in the process list). It prints where things are, logs with structlog, and stops
cleanly on SIGINT or SIGTERM. The last line it prints at start-up begins with ``ready``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Sequence

from emulator.thingworx.limits import StandInLimits
from emulator.thingworx.server import ThingWorxStandIn
from emulator.thingworx.unconfirmed import (
    BIND_POLICIES,
    DEFAULT_BIND_POLICY,
    DEFAULT_REQUEST_TIMEOUT,
)
from logsetup import configure_logging

__all__ = ["main", "parse_args", "run"]

APP_KEY_ENV = "THINGWORX_APP_KEY"

_LIMIT_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("auth_timeout", float, "seconds a connection has to authenticate (ThingWorx: 15)"),
    ("stale_multipart_after", float, "seconds before an incomplete multipart set is dropped"),
    ("multipart_pending_bytes", int, "bytes of incomplete multipart sets one connection holds"),
    ("multipart_pending_bytes_total", int, "the same for every connection together"),
    ("max_things_per_connection", int, "Things one connection may hold bound"),
    ("frame_rate", float, "frames/s a connection may send on average; 0 = no limit"),
    ("frame_burst", int, "frames a connection may send at once over the rate"),
)
"""The :class:`StandInLimits` fields offered as ``--field-name`` options."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m emulator.thingworx",
        description="Run a ThingWorx stand-in: AlwaysOn at /Thingworx/WS and the REST convention.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8080, help="port (0: any free; a C SDK edge needs < 32768)"
    )
    parser.add_argument("--app-key", default=None, help=f"application key (or ${APP_KEY_ENV})")
    parser.add_argument("--chunk-size", type=int, default=8192, help="AlwaysOn chunk size")
    parser.add_argument(
        "--request-timeout",
        "--call-timeout",
        dest="request_timeout",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT,
        help="seconds a call waits for the edge's answer before it fails with 504, like "
        "ThingWorx's request timeout (default %(default)s)",
    )
    parser.add_argument(
        "--bind-policy",
        choices=BIND_POLICIES,
        default=DEFAULT_BIND_POLICY,
        help="a BIND of a Thing another connection holds: refused (first-in-wins, ThingWorx's "
        "default) or taken over (last-in-wins)",
    )
    parser.add_argument(
        "--compress",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="deflate the stand-in's own frames when the client negotiates permessage-deflate",
    )
    defaults = StandInLimits()
    limits = parser.add_argument_group("limits per connection (docs/thingworx-standin.md)")
    for field, kind, text in _LIMIT_OPTIONS:
        limits.add_argument(
            "--" + field.replace("_", "-"),
            type=kind,
            default=getattr(defaults, field),
            help=f"{text} (default %(default)s)",
        )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--log-format", default="auto", choices=["auto", "console", "json"])
    args = parser.parse_args(argv)
    args.app_key = args.app_key or os.environ.get(APP_KEY_ENV)
    if not args.app_key:
        parser.error(f"an application key is required (--app-key or ${APP_KEY_ENV})")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be within 0..65535")
    if not 64 <= args.chunk_size <= 65535:
        parser.error("--chunk-size must be within 64..65535")
    if args.request_timeout <= 0:
        parser.error("--request-timeout must be positive")
    try:
        args.limits = StandInLimits(**{f: getattr(args, f) for f, _, _ in _LIMIT_OPTIONS})
    except ValueError as exc:
        parser.error(str(exc).replace("_", "-"))
    return args


async def run(args: argparse.Namespace) -> None:
    """Start the stand-in, print where it is, wait for SIGINT/SIGTERM, stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    standin = ThingWorxStandIn(
        args.app_key,
        host=args.host,
        port=args.port,
        chunk_size=args.chunk_size,
        call_timeout=args.request_timeout,
        compress=args.compress,
        limits=args.limits,
        bind_policy=args.bind_policy,
    )
    await standin.start()
    try:
        print("ThingWorx stand-in")
        print(f"  AlwaysOn websocket : {standin.ws_url}")
        print(f"  REST               : {standin.rest_url}/Things/{{thing}}/Services/{{service}}")
        print(f"ready {standin.ws_url}", flush=True)
        await stop.wait()
    finally:
        await standin.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point."""
    args = parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
