"""Benchmark: the cost of decoding hostile nested InfoTables, per byte, against a flat table's.

Method: for each depth, a table nested that deep (each level one INFOTABLE cell holding the next
level, a STRING leaf) is encoded with the project's codec; the bad form has the leaf's type byte
set to 0x99 (issue 15's reproduction), the valid form is left as is. Each is decoded with
``decode_infotable`` N times after a warm-up, on the C row reader (when built) and on the
generated Python reader (``rowcodec.pure_python()``); the best run's time is divided by the
input's length. The comparison, in the same run: a *wide* valid table holding the same number of
tables side by side (one INFOTABLE column, depth - 1 rows, each a leaf table), about as long,
decoded the same way. The ratio "nested / wide per byte" says what depth itself costs: before the
fix each level doubled the work (depth 16: 8 s for 210 bytes on the C reader); with linear
decoding the ratio stays near 1 at every depth.

Run: ``python -m benchmarks.bench_decode_hostile [runs]``
"""

from __future__ import annotations

import contextlib
import platform
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from agent.alwayson import (
    AlwaysOnError,
    BaseType,
    DataShape,
    FieldDefinition,
    InfoTable,
    decode_infotable,
    encode_infotable,
    rowcodec,
)

LEAF = DataShape((FieldDefinition("s", BaseType.STRING),))
NESTED = DataShape((FieldDefinition("t", BaseType.INFOTABLE),))
DEPTHS = (1, 8, 16, 24, 32, 33, 40)


def nested(depth: int, bad: bool) -> bytes:
    table = InfoTable(LEAF, [{"s": "x"}])
    for _ in range(depth - 1):
        table = InfoTable(NESTED, [{"t": table}])
    data = encode_infotable(table)
    if bad:
        at = data.rindex(bytes((BaseType.STRING.wire_byte, 1)) + b"x")
        data = data[:at] + b"\x99" + data[at + 1 :]
    return data


def wide(depth: int) -> bytes:
    leaf = InfoTable(LEAF, [{"s": "x"}])
    if depth == 1:
        return encode_infotable(leaf)
    return encode_infotable(InfoTable(NESTED, [{"t": leaf} for _ in range(depth - 1)]))


def best_time(fn: Callable[[], Any], runs: int) -> float:
    def once() -> None:
        with contextlib.suppress(AlwaysOnError):
            fn()

    once()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - start)
    return best


@contextlib.contextmanager
def reader(name: str) -> Iterator[None]:
    if name == "python":
        with rowcodec.pure_python():
            yield
    else:
        yield


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    print(__doc__.split("\n\n")[1].replace("\n", " "))
    print(f"python {platform.python_version()} on {platform.machine()}, best of {runs} runs")
    readers = ["c", "python"] if rowcodec.ACCELERATED else ["python"]
    print(f"{'reader':7} {'depth':>5} {'form':6} {'bytes':>6} {'time':>10} {'ns/byte':>8} "
          f"{'wide ns/byte':>12} {'ratio':>6}")  # fmt: skip
    for name in readers:
        with reader(name):
            for depth in DEPTHS:
                for bad in (True, False):
                    data = nested(depth, bad)
                    base = wide(depth)
                    t = best_time(lambda d=data: decode_infotable(d), runs)  # type: ignore[misc]
                    tf = best_time(lambda d=base: decode_infotable(d), runs)  # type: ignore[misc]
                    per, per_flat = t / len(data) * 1e9, tf / len(base) * 1e9
                    print(
                        f"{name:7} {depth:5} {'bad' if bad else 'valid':6} {len(data):6} "
                        f"{t * 1e6:8.1f}us {per:8.0f} {per_flat:12.0f} {per / per_flat:6.1f}"
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
