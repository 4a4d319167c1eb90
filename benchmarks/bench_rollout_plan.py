"""Benchmark of rollout planning: 100,000 device ids to waves, IN lists and wave job ids.

Run: ``python -m benchmarks.bench_rollout_plan [--devices N] [--repeat R]``.

Method: ``N`` distinct device ids (``site-<k>-device-<i>``, 15..28 characters, one in 100
holding a ``'`` that must be escaped) are planned as a Start call would plan them: the ``devices``
input checked and deduplicated (``check_device_ids``), wave sizes for ``waveSize`` 1,000 growing
by 2 up to 10,000 (``RolloutPlan.wave_sizes``), every wave cut into ``deviceId IN [...]``
conditions under the query limit with its job ids (``wave_jobs``), then the whole dry run
(``dry_run``, which cuts the conditions again). Best of ``R`` runs with ``time.perf_counter``
(median beside). The comparison builds the same IN lists naively: append an id, join the whole
list, measure the text, and start a new list when it is too long (quadratic in a list's ids),
checked to give the same conditions. The issue's goal: planning 100,000 devices in ≤ 2 s.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from rollouts import RolloutPlan, check_device_ids, dry_run, wave_jobs
from rollouts.plan import MAX_CONDITION_LENGTH, quote_id


def make_ids(count: int) -> list[str]:
    """Distinct device ids, one in 100 with a quote."""
    return [
        f"site-{i % 97}-device-{i}" + ("-o'brien" if i % 100 == 0 else "") for i in range(count)
    ]


def naive_conditions(ids: Sequence[str], limit: int = MAX_CONDITION_LENGTH) -> list[str]:
    """The IN lists built the obvious way: join and measure after every id."""
    out: list[str] = []
    part: list[str] = []
    for device_id in ids:
        candidate = [*part, quote_id(device_id)]
        text = "deviceId IN [" + ", ".join(candidate) + "]"
        if len(text) > limit and part:
            out.append("deviceId IN [" + ", ".join(part) + "]")
            part = [quote_id(device_id)]
        else:
            part = candidate
    if part:
        out.append("deviceId IN [" + ", ".join(part) + "]")
    return out


def timed(run: Callable[[], object], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    raw = make_ids(args.devices)
    plan = RolloutPlan(wave_size=1000, growth_factor=2, max_wave_size=10_000)
    now = datetime(2026, 1, 1, tzinfo=UTC)

    def plan_all() -> int:
        ids, _ = check_device_ids(raw)
        jobs = 0
        for wave, members in enumerate(plan.waves(ids), start=1):
            jobs += len(wave_jobs("bench-rollout", wave, 1, members))
        return jobs

    def plan_and_dry_run() -> None:
        ids, warnings = check_device_ids(raw)
        for wave, members in enumerate(plan.waves(ids), start=1):
            wave_jobs("bench-rollout", wave, 1, members)
        dry_run(plan, ids, now=now, warnings=warnings)

    ids, _ = check_device_ids(raw)
    waves = plan.waves(ids)
    ours = [j.query_condition for w, m in enumerate(waves, 1) for j in wave_jobs("b", w, 1, m)]
    naive = [c for m in waves for c in naive_conditions(m)]
    assert ours == naive, "the naive builder must give the same conditions"

    print(
        f"python {platform.python_version()} on {platform.machine()}, {args.devices:,} ids, "
        f"best of {args.repeat} (median)"
    )
    print(
        f"waves {plan.wave_sizes(len(ids))}, {len(ours):,} hub jobs, "
        f"longest condition {max(map(len, ours)):,} chars (limit {MAX_CONDITION_LENGTH:,})"
    )
    rows = [
        ("check ids + waves + IN lists + job ids", plan_all),
        ("the same + dry run", plan_and_dry_run),
        (
            "IN lists only (wave_jobs over every wave)",
            lambda: [wave_jobs("b", w, 1, m) for w, m in enumerate(waves, 1)],
        ),
        ("IN lists, naive (join and measure per id)", lambda: [naive_conditions(m) for m in waves]),
    ]
    results = {}
    for name, run in rows:
        best, median = timed(run, args.repeat)
        results[name] = best
        print(f"{name:<44} {best * 1000:8.1f} ms  ({median * 1000:.1f} ms)")
    ratio = results[rows[3][0]] / results[rows[2][0]]
    print(
        f"naive / ours for the IN lists: {ratio:.1f}x; goal ≤ 2 s for planning: "
        f"{'met' if results[rows[1][0]] <= 2 else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
