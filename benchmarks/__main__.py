"""Run every benchmark in turn: ``python -m benchmarks`` (or ``make bench``).

Each benchmark is its own module with its own ``--help``; this runner starts each as a separate
process (so one benchmark's memory and threads never colour another's figures) with its default
sizes, and prints its output under a heading. The figures go into BENCHMARKS.md by hand, with the
machine they were taken on.
"""

from __future__ import annotations

import subprocess
import sys
import time

BENCHMARKS = [
    "bench_alwayson_codec",
    "bench_decode_hostile",
    "bench_rest_roundtrip",
    "bench_query",
    "bench_twin_job",
    "bench_method_job",
    "bench_mqtt_fleet",
    "bench_hub_queries",
    "bench_emulator_rollout_paths",
    "bench_job_results",
    "bench_hub_memory",
    "bench_rollout_store",
    "bench_getjob_chain",
    "bench_agent_footprint",
    "bench_push",
    "bench_takeover",
    "bench_rollout",
]


def main() -> int:
    failed = []
    for name in BENCHMARKS:
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", f"benchmarks.{name}"])
        print(f"--- {name}: exit {code}, {time.perf_counter() - started:.1f} s wall", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
