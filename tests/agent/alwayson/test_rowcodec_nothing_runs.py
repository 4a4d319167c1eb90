"""NOTHING cells inside a run of fixed-width columns stay on the fast row reader."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import pytest

from agent.alwayson import BaseType, DataShape, FieldDefinition, InfoTable
from agent.alwayson.valuecodec import (
    decode_infotable,
    encode_infotable,
    read_rows_checked,
    read_shape,
)

SHAPE = DataShape(
    (
        FieldDefinition("id", BaseType.STRING),
        FieldDefinition("created", BaseType.DATETIME),
        FieldDefinition("ended", BaseType.DATETIME),
        FieldDefinition("window", BaseType.LONG),
        FieldDefinition("method", BaseType.STRING),  # a string after a run: header pre-read
        FieldDefinition("timeout", BaseType.INTEGER),
        FieldDefinition("connect", BaseType.INTEGER),
        FieldDefinition("patch", BaseType.JSON),  # JSON after a run
        FieldDefinition("count", BaseType.INTEGER),
        FieldDefinition("ok", BaseType.BOOLEAN),  # a run that ends the row
    )
)
WHEN = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
FULL: dict[str, Any] = {
    "id": "job-1", "created": WHEN, "ended": WHEN, "window": 3600, "method": "reboot",
    "timeout": 30, "connect": 10, "patch": {"tags": {"a": 1}}, "count": 4, "ok": True,
}  # fmt: skip


@contextmanager
def _checked_reads() -> Iterator[list[str]]:
    """Names of the checked row reader's calls while the block runs (a profile hook)."""
    seen: list[str] = []

    def hook(frame: FrameType, event: str, arg: object) -> None:
        if (
            event == "call"
            and frame.f_code is read_rows_checked.__globals__["read_row_checked"].__code__
        ):
            seen.append(frame.f_code.co_name)

    sys.setprofile(hook)
    try:
        yield seen
    finally:
        sys.setprofile(None)


@pytest.mark.parametrize(
    "absent",
    [
        ("ended",),
        ("created", "ended", "window"),
        ("timeout",),
        ("timeout", "connect"),
        ("connect", "patch"),
        ("count",),
        ("ok",),
        ("ended", "connect", "ok", "method"),
    ],
)
def test_nothing_in_a_run_decodes_fast_and_like_the_checked_reader(absent: tuple[str, ...]) -> None:
    rows = [{k: v for k, v in FULL.items() if k not in absent}, dict(FULL)]
    data = encode_infotable(InfoTable(SHAPE, rows))
    shape, pos = read_shape(data, 0, cached=False)
    checked, end = read_rows_checked(data, pos, shape)
    with _checked_reads() as seen:
        table = decode_infotable(data)
    assert seen == []
    assert table.rows == checked
    assert table == InfoTable(SHAPE, rows)
    assert end == len(data)


def test_a_cell_of_another_type_in_a_run_still_goes_to_the_checked_reader() -> None:
    from agent.alwayson import Variant

    rows = [{**FULL, "timeout": Variant(BaseType.STRING, "soon")}]
    data = encode_infotable(InfoTable(SHAPE, rows))
    with _checked_reads() as seen:
        table = decode_infotable(data)
    assert seen == ["read_row_checked"]
    assert table.rows[0]["timeout"] == Variant(BaseType.STRING, "soon")
