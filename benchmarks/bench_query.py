"""Benchmark of the IoT Hub query language: parse time and evaluation throughput.

Run: ``python -m benchmarks.bench_query [--twins N] [--repeat R]``.

Method: the twins are generated with a fixed seed (``deviceId``, ``status``,
``connectionState``, ``tags.site``/``tags.floor``, ``properties.desired``/``.reported`` with
``fw`` and ``$version``), as the emulator's registry holds them. Parse time is measured on the
public ``parse_condition``/``parse_query``: once cold (the first call also builds the lark LALR
parser), then on texts made unique per call so the result cache does not answer, then on a
repeated text (cache hit). Evaluation runs each of three representative conditions with
``Condition.matches`` over every twin, best of ``--repeat`` runs (``time.perf_counter``), and
reports documents per second; ``run_query`` with ``SELECT COUNT()`` is timed the same way.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from iothub_query import Condition, parse_condition, parse_query, run_query

CONDITIONS = {
    "simple": "tags.site = 'a' AND properties.reported.fw < 3",
    "in-list": "deviceId IN [" + ", ".join(f"'dev-{i:06d}'" for i in range(0, 5000, 50)) + "]",
    "complex": (
        "(Status = 'enabled' OR connectionState = 'Connected') AND NOT IS_DEFINED(tags.retired)"
        " AND properties.reported.$version >= 2 AND tags.floor NIN [0, 13]"
    ),
}


def make_twins(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Generated twin documents, deterministic for a seed."""
    rng = random.Random(seed)
    twins = []
    for i in range(count):
        tags: dict[str, Any] = {"site": rng.choice("abcd"), "floor": rng.randint(0, 20)}
        if rng.random() < 0.1:
            tags["retired"] = True
        twins.append(
            {
                "deviceId": f"dev-{i:06d}",
                "etag": "AAAAAAAAAAE=",
                "version": rng.randint(1, 50),
                "status": rng.choice(["enabled", "enabled", "disabled"]),
                "connectionState": rng.choice(["Connected", "Disconnected"]),
                "tags": tags,
                "properties": {
                    "desired": {"fw": "1.0.0", "$version": rng.randint(1, 9)},
                    "reported": {"fw": rng.randint(0, 5), "$version": rng.randint(1, 9)},
                },
            }
        )
    return twins


def best_of(repeat: int, action: Callable[[], object]) -> float:
    """The shortest wall time of ``repeat`` runs of ``action``, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its method and figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--twins", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    print(__doc__)
    print(f"python {sys.version.split()[0]} on {platform.platform()} ({platform.processor()})")
    print()

    start = time.perf_counter()
    parse_condition("tags.site = 'cold'")
    cold = time.perf_counter() - start
    print(f"parse, first call (builds the LALR parser): {cold * 1e3:8.2f} ms")

    runs = 200
    counter = iter(range(10**9))
    for name, text in CONDITIONS.items():

        def parse_fresh(text: str = text) -> None:
            for _ in range(runs):
                parse_condition(f"{text} OR x = {next(counter)}")

        seconds = best_of(args.repeat, parse_fresh) / runs
        print(f"parse, uncached, {name:8} ({len(text):4} chars): {seconds * 1e6:8.1f} us")
    query_text = "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'j1'"
    parse_query(query_text)
    hit = best_of(args.repeat, lambda: [parse_query(query_text) for _ in range(10_000)]) / 10_000
    print(f"parse, cached (same text again):           {hit * 1e6:8.2f} us")
    print()

    twins = make_twins(args.twins)
    print(f"evaluation over {len(twins):,} twins, best of {args.repeat}:")
    for name, text in CONDITIONS.items():
        condition = parse_condition(text)
        matched = sum(1 for twin in twins if condition.matches(twin))

        def scan(c: Condition = condition) -> list[dict[str, Any]]:
            return [t for t in twins if c.matches(t)]

        seconds = best_of(args.repeat, scan)
        print(
            f"  {name:8} {seconds * 1e3:8.1f} ms  {len(twins) / seconds:12,.0f} docs/s"
            f"  ({matched:,} matched)  {text[:70]}{'...' if len(text) > 70 else ''}"
        )
    count = parse_query(f"SELECT COUNT() AS n FROM devices WHERE {CONDITIONS['simple']}")
    seconds = best_of(args.repeat, lambda: run_query(count, twins))
    print(
        f"  run_query SELECT COUNT() (simple): {seconds * 1e3:8.1f} ms"
        f"  {len(twins) / seconds:12,.0f} docs/s  -> {run_query(count, twins)}"
    )


if __name__ == "__main__":
    main()
