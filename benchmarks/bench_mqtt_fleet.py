"""Benchmark of the device side: connecting a simulated fleet and fanning out direct methods.

Run: ``python -m benchmarks.bench_mqtt_fleet [--devices N] [--calls C] [--answer-delay S]``.

Method: one process, one asyncio event loop holding both ends. A throwaway CA (trustme) signs a
certificate for 127.0.0.1; :class:`DeviceEndpoint` listens there on a free port with an
in-memory twin store (no SQLite), and a :class:`Fleet` of N devices (CleanSession 0, SAS
passwords, three subscriptions each) connects through real TLS over loopback, 100 handshakes at
a time. Reported: the wall time to connect the whole fleet (TLS + CONNECT/CONNACK + SUBSCRIBE/
SUBACK), then C ``invoke_method`` calls (``reboot``, round-robin over the devices) started at once
with ``asyncio.gather``: total wall time, calls per second, and per-call latency percentiles
(``time.perf_counter`` around each call, which includes waiting for the loop under load).
RSS is the process's resident set from /proc/self/status (VmRSS) before the endpoint starts, with
the fleet connected, and at the peak (ru_maxrss); both ends' memory is included. Logging is
filtered to warnings so that it does not dominate the figures. Since client and server share one
loop on one core, the figures are a lower bound of what the endpoint alone would sustain.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import platform
import resource
import ssl
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import trustme

from emulator.iothub.clock import SystemClock
from emulator.iothub.fleet import Fleet
from emulator.iothub.mqtt import DeviceEndpoint
from emulator.iothub.ports import Predicate
from logsetup import configure_logging

HUB = "bench.hub"


class MemoryTwins:
    """A minimal in-memory TwinStore for the benchmark."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._keys = dict(keys)
        self._reported: dict[str, dict[str, Any]] = {d: {"$version": 1} for d in keys}

    def hub_host(self) -> str:
        return HUB

    def device_keys(self, device_id: str) -> tuple[str, str] | None:
        key = self._keys.get(device_id)
        return None if key is None else (key, "")

    def twin_properties(self, device_id: str) -> dict[str, Any]:
        return {"desired": {"$version": 1}, "reported": dict(self._reported[device_id])}

    def patch_reported(self, device_id: str, patch: Mapping[str, Any]) -> int:
        reported = self._reported[device_id]
        reported.update(patch)
        reported["$version"] += 1
        return int(reported["$version"])

    def set_connection_state(self, device_id: str, connected: bool, when: datetime) -> None:
        pass

    def select_device_ids(self, condition: Predicate | None) -> list[str]:
        return sorted(self._keys)

    def apply_job_patch(
        self,
        device_ids: Sequence[str],
        tags: Mapping[str, Any] | None,
        desired: Mapping[str, Any] | None,
    ) -> dict[str, dict[str, Any]]:
        return {d: {} for d in device_ids}


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def run(devices: int, calls: int, answer_delay: float) -> None:
    rss_start = rss_mib()
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    keys = {
        f"bench-{i:05d}": base64.b64encode(f"key-{i}".ljust(32, "k").encode()).decode()
        for i in range(devices)
    }
    endpoint = DeviceEndpoint(MemoryTwins(keys), SystemClock())
    port = await endpoint.start("127.0.0.1", 0, server_ctx)
    fleet = Fleet(
        "127.0.0.1",
        port,
        ca.cert_pem.bytes().decode(),
        HUB,
        list(keys.items()),
        answer_delay=answer_delay,
        connect_timeout=120.0,
    )
    try:
        started = time.perf_counter()
        await fleet.start()
        connect_seconds = time.perf_counter() - started
        assert endpoint.connected_count() == devices, endpoint.connected_count()
        rss_connected = rss_mib()

        ids = list(keys)
        latencies: list[float] = []

        async def call(index: int) -> int:
            begin = time.perf_counter()
            reply = await endpoint.invoke_method(
                ids[index % len(ids)],
                "reboot",
                {"delaySeconds": 1},
                response_timeout=60,
                connect_timeout=0,
            )
            latencies.append(time.perf_counter() - begin)
            return reply.status

        started = time.perf_counter()
        statuses = await asyncio.gather(*(call(i) for i in range(calls)))
        call_seconds = time.perf_counter() - started
        assert set(statuses) == {200}, set(statuses)
    finally:
        await fleet.stop()
        await endpoint.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(__doc__)
    print(f"python {platform.python_version()} on {platform.machine()}, {sys.platform}")
    print(f"devices {devices}, calls {calls}, device answer delay {answer_delay}s")
    print(
        f"fleet connect: {connect_seconds:.2f} s "
        f"({devices / connect_seconds:.0f} devices/s incl. TLS + CONNECT + SUBSCRIBE)"
    )
    print(
        f"direct methods: {call_seconds:.2f} s for {calls} concurrent calls, "
        f"{calls / call_seconds:.0f} calls/s"
    )
    print(
        f"latency: p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms"
    )
    print(
        f"RSS: {rss_start:.1f} MiB at start, {rss_connected:.1f} MiB with the fleet connected "
        f"(+{(rss_connected - rss_start) * 1024 / devices:.1f} KiB per device, both ends), "
        f"peak {peak:.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--answer-delay", type=float, default=0.0)
    args = parser.parse_args()
    configure_logging("WARNING", "console")  # plain tracebacks, never the locals (issue 15)
    asyncio.run(run(args.devices, args.calls, args.answer_delay))


if __name__ == "__main__":
    main()
