"""The agent as the GetJob chain benchmark runs it: an :class:`~agent.app.AgentApp` plus one
trivial service, in-process or as its own process.

:func:`build_agent` makes the AgentApp from the two ends' addresses and adds ``BenchEcho`` (one
STRING input ``value``, answered as it came, no IoT Hub call) to the gateway Thing, so that the
benchmark can measure the stand-in, AlwaysOn and the agent's dispatch without the SDK.

As a process (``python -m benchmarks.chain_agent --url WS --ca-file PEM``, with the app key in
``$BENCH_APP_KEY`` and the owner connection string in ``$BENCH_IOTHUB_CONNECTION``), it prints
``ready`` once the Things are bound, then answers one JSON line per command read on stdin:

- ``latencies N``: the channel's last N call latencies (AlwaysOn request in → answer out), s;
- ``inner N``: the last N ``IotHubClient.get_job`` latencies of the GetJob calls the chain made
  (timed around the call inside the agent: worker hop + SDK call), s;
- ``sdk N JOB``: N sequential ``IotHubClient.get_job(JOB)`` calls made inside the agent (the
  worker-thread hop and the SDK call, as the GetJob handler makes it), their latencies, s;
- ``profile on`` / ``profile off FILE``: cProfile the event-loop thread between the two, dump
  the stats to FILE (worker threads are not profiled);
- ``quit`` (or end of input): stop the agent (UNBIND, close) and exit.

Rules: stdout carries only the ``ready`` line and the answers; the agent's log goes to stderr at
WARNING, as logging at INFO costs nothing on the GetJob path anyway (it logs nothing on success).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import sys
import time
from collections import deque
from collections.abc import Sequence

from agent.alwayson import BaseType, DataShape, FieldDefinition
from agent.app import AgentApp
from agent.iothub import Job
from agent.registry import RemoteService, ServiceCall
from logsetup import configure_logging
from tests.support.settings import CATALOGUE, chain_settings

__all__ = ["ECHO_SERVICE", "GATEWAY", "add_echo", "build_agent", "main", "time_get_job"]

GATEWAY = "AzureIotHub"
ECHO_SERVICE = "BenchEcho"
APP_KEY_ENV = "BENCH_APP_KEY"
CONNECTION_ENV = "BENCH_IOTHUB_CONNECTION"
_READY_TIMEOUT = 20.0
_STOP_TIMEOUT = 10.0


async def _echo(call: ServiceCall) -> str:
    return str(call.inputs.get("value", ""))


def add_echo(app: AgentApp) -> None:
    """Add ``BenchEcho`` (one STRING input ``value``, answered as it came) to the gateway Thing."""
    app.registry.add_service(
        GATEWAY,
        RemoteService(
            ECHO_SERVICE,
            "benchmark: answers its input, calls nothing",
            DataShape.of(FieldDefinition("value", BaseType.STRING, "text to echo")),
            BaseType.STRING,
            None,
            _echo,
        ),
    )


def build_agent(
    ws_url: str, app_key: str, connection_string: str, ca_file: str, *, workers: int = 16
) -> AgentApp:
    """The agent the benchmark runs: the gateway Thing with its services, plus ``BenchEcho``;
    the settings are the chain's (tests/support/settings.py), as the in-process layout has them.

    Args:
        ws_url: the stand-in's AlwaysOn URL (``ws://host:port/Thingworx/WS``).
        app_key: the stand-in's application key.
        connection_string: the IoT Hub owner connection string.
        ca_file: the hub's CA (PEM file).
        workers: IoT Hub worker threads.
    """
    settings = chain_settings(
        ws_url,
        app_key,
        connection_string,
        ca_file,
        gateway=GATEWAY,
        wrappers_dir=CATALOGUE,
        iothub={"workers": workers},
    )
    app = AgentApp(settings)
    add_echo(app)
    return app


def time_get_job(app: AgentApp, keep: int = 10_000) -> deque[float]:
    """Time every ``IotHubClient.get_job`` the agent's services make from now on.

    Returns:
        The latencies (s), newest last, the last ``keep`` of them.
    """
    times: deque[float] = deque(maxlen=keep)
    get_job = app.client.get_job

    async def timed(job_id: str, *, deadline: float | None = None) -> Job:
        started = time.perf_counter()
        try:
            return await get_job(job_id, deadline=deadline)
        finally:
            times.append(time.perf_counter() - started)

    app.client.get_job = timed  # type: ignore[method-assign]
    return times


async def sdk_latencies(app: AgentApp, calls: int, job_id: str) -> list[float]:
    """``calls`` sequential ``get_job`` calls through the agent's IotHubClient, in seconds."""
    out: list[float] = []
    for _ in range(calls):
        started = time.perf_counter()
        await app.client.get_job(job_id)
        out.append(time.perf_counter() - started)
    return out


async def _serve(args: argparse.Namespace) -> None:
    app = build_agent(
        args.url,
        os.environ[APP_KEY_ENV],
        os.environ[CONNECTION_ENV],
        args.ca_file,
        workers=args.workers,
    )
    inner = time_get_job(app)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    profile = cProfile.Profile()
    async with app:
        await app.wait_ready(_READY_TIMEOUT)
        print("ready", flush=True)
        while line := (await reader.readline()).decode().split():
            command, rest = line[0], line[1:]
            if command == "latencies":
                answer: object = list(app.channel.stats.latencies)[-int(rest[0]) :]
            elif command == "inner":
                answer = list(inner)[-int(rest[0]) :]
            elif command == "sdk":
                answer = await sdk_latencies(app, int(rest[0]), rest[1])
            elif command == "profile" and rest[0] == "on":
                profile.enable()
                answer = "on"
            elif command == "profile":
                profile.disable()
                profile.dump_stats(rest[1])
                answer = rest[1]
            elif command == "quit":
                break
            else:
                answer = {"error": f"unknown command {command!r}"}
            print(json.dumps(answer), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chain_agent")
    parser.add_argument("--url", required=True, help="the stand-in's AlwaysOn ws:// URL")
    parser.add_argument("--ca-file", required=True, help="the hub's CA (PEM)")
    parser.add_argument("--workers", type=int, default=16, help="IoT Hub worker threads")
    args = parser.parse_args(argv)
    configure_logging("WARNING", "json")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
