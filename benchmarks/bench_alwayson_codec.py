"""Benchmark: AlwaysOn InfoTable encode/decode (agent/alwayson).

Method: one InfoTable of 1,000 rows x 12 columns (3 STRING, 3 NUMBER, 2 INTEGER, 2 DATETIME,
1 BOOLEAN, 1 JSON; deterministic pseudo-random content, about 180 KB on the wire) is encoded
with ``encode_infotable`` and decoded with ``decode_infotable``; each is timed over N runs with
``time.perf_counter`` after a warm-up; the best run is reported (as ms, MB/s of wire bytes and
rows/s) with the median run beside it (the machine may be shared: the median is the noisier
figure). The same is done for a whole response message (``encode_message`` into 8 KiB
multipart chunks, then ``MessageAssembler.feed`` of every chunk). The goal set for the project
is within 2x of a C implementation: encode <= ~4.8 ms, decode <= ~2 ms for this table.

The row reader that ran is printed: the optional C accelerator when it is built, else the
generated Python reader (``JOBS_AGENT_PURE_PYTHON=1`` forces the latter; see docs/alwayson.md).

Run: ``python -m benchmarks.bench_alwayson_codec [runs]``
"""

from __future__ import annotations

import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.alwayson import (
    BaseType,
    DataShape,
    FieldDefinition,
    InfoTable,
    MessageAssembler,
    Response,
    Status,
    decode_infotable,
    encode_infotable,
    encode_message,
    rowcodec,
)

ROWS = 1000


def build_table(rows: int = ROWS, seed: int = 7) -> InfoTable:
    """The benchmark table: 12 columns, interleaved types, deterministic content."""
    rnd = random.Random(seed)
    shape = DataShape.of(
        FieldDefinition("deviceId", BaseType.STRING),
        FieldDefinition("temperature", BaseType.NUMBER),
        FieldDefinition("attempts", BaseType.INTEGER),
        FieldDefinition("startTime", BaseType.DATETIME),
        FieldDefinition("status", BaseType.STRING),
        FieldDefinition("humidity", BaseType.NUMBER),
        FieldDefinition("online", BaseType.BOOLEAN),
        FieldDefinition("endTime", BaseType.DATETIME),
        FieldDefinition("message", BaseType.STRING),
        FieldDefinition("pressure", BaseType.NUMBER),
        FieldDefinition("code", BaseType.INTEGER),
        FieldDefinition("payload", BaseType.JSON),
        name="BenchRow",
    )
    base = datetime(2024, 5, 1, tzinfo=UTC)
    statuses = ["completed", "failed", "running", "queued", "cancelled"]
    table_rows: list[dict[str, Any]] = []
    for i in range(rows):
        start = base + timedelta(milliseconds=rnd.randrange(10**10))
        table_rows.append(
            {
                "deviceId": f"device-{i:06d}-{rnd.randrange(16**8):08x}",
                "temperature": rnd.uniform(-40, 85),
                "attempts": rnd.randrange(10),
                "startTime": start,
                "status": rnd.choice(statuses),
                "humidity": rnd.uniform(0, 100),
                "online": rnd.random() < 0.5,
                "endTime": start + timedelta(milliseconds=rnd.randrange(10**6)),
                "message": f"method reboot answered {rnd.randrange(1000)} after retry #{i} of job",
                "pressure": rnd.uniform(900, 1100),
                "code": rnd.choice([200, 404, 500, 504]),
                "payload": {"status": rnd.randrange(600), "ok": rnd.random() < 0.9, "n": i},
            }
        )
    return InfoTable(shape, table_rows)


def best_of(runs: int, fn: Callable[[], Any]) -> tuple[float, float]:
    """The best and the median of ``runs`` timed calls of ``fn``, in seconds."""
    fn()  # warm-up (also compiles the per-shape row codec)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def report(label: str, timing: tuple[float, float], size: int, rows: int) -> None:
    seconds, median = timing
    print(
        f"{label:<34} {seconds * 1e3:8.3f} ms (median {median * 1e3:6.3f})"
        f"  {size / seconds / 1e6:8.1f} MB/s  {rows / seconds:12,.0f} rows/s"
    )


def main(argv: list[str]) -> None:
    runs = int(argv[1]) if len(argv) > 1 else 30
    table = build_table()
    data = encode_infotable(table)
    assert decode_infotable(data).rows == table.rows
    response = Response(Status.SUCCESS, 1, 5, 42, None, table)
    chunks = encode_message(response)

    def reassemble() -> Any:
        assembler = MessageAssembler()
        out = None
        for chunk in chunks:
            out = assembler.feed(chunk, 0.0)
        return out

    assert reassemble().content.rows == table.rows
    print(f"python {platform.python_version()} on {platform.machine()}, best of {runs} runs")
    print(f"table: {ROWS} rows x 12 columns, {len(data):,} bytes on the wire")
    print(f"row reader: C accelerator {rowcodec.ACCELERATOR}")
    report("encode_infotable", best_of(runs, lambda: encode_infotable(table)), len(data), ROWS)
    report("decode_infotable", best_of(runs, lambda: decode_infotable(data)), len(data), ROWS)
    report(
        f"encode_message ({len(chunks)} chunks)",
        best_of(runs, lambda: encode_message(response)),
        len(data),
        ROWS,
    )
    report("MessageAssembler.feed (all chunks)", best_of(runs, reassemble), len(data), ROWS)


if __name__ == "__main__":
    main(sys.argv)
