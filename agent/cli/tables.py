"""InfoTables (ThingWorx JSON) as rich tables, for ``jobs-agent call``.

Rules: tables never cut an id (``jobId``, ``deviceId``): other columns fold first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

__all__ = ["infotable_table"]

_ID_COLUMNS = frozenset({"jobId", "deviceId", "name", "field"})


def _fields(doc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(name, baseType)`` of an InfoTable's fields, in ordinal order."""
    defs = (doc.get("dataShape") or {}).get("fieldDefinitions") or {}
    items = list(defs.values()) if isinstance(defs, dict) else list(defs)
    if items and all(isinstance(d, dict) and "ordinal" in d for d in items):
        items.sort(key=lambda d: d["ordinal"])
    fields = [(str(d.get("name", "")), str(d.get("baseType", ""))) for d in items]
    if not fields:
        names: dict[str, None] = {}
        for row in doc.get("rows") or []:
            names.update(dict.fromkeys(row))
        fields = [(n, "") for n in names]
    return fields


def _cell(value: Any, base_type: str) -> str:
    if value is None:
        return ""
    if base_type == "DATETIME" and isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value / 1000, UTC)
        return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# Columns shown when a job list or per-device results have several rows: (marker, columns); the
# single-row view shows every field.
_MULTI_ROW_COLUMNS: tuple[tuple[frozenset[str], frozenset[str]], ...] = (
    (
        frozenset({"deviceId", "methodStatus"}),
        frozenset(
            {"deviceId", "status", "methodStatus", "methodPayload", "errorCode", "errorDescription"}
        ),
    ),
    (
        frozenset({"jobId", "deviceCount"}),
        frozenset(
            {
                "jobId",
                "type",
                "status",
                "createdTime",
                "methodName",
                "deviceCount",
                "succeededCount",
                "failedCount",
                "summary",
            }
        ),
    ),
)


def infotable_table(doc: Mapping[str, Any], title: str | None = None) -> Table:
    """A rich table of an InfoTable (ThingWorx JSON).

    One row is shown vertically (field, value); several rows as columns, leaving out the columns
    that are empty in every row, and for per-device results and job lists all but the telling
    columns.
    """
    fields = _fields(doc)
    rows: list[Mapping[str, Any]] = list(doc.get("rows") or [])
    if len(rows) == 1:
        table = Table(title=title, show_lines=False)
        table.add_column("field", no_wrap=True)
        table.add_column("value", overflow="fold")
        for name, base_type in fields:
            text = _cell(rows[0].get(name), base_type)
            if text:
                table.add_row(name, text)
        return table
    names = {n for n, _ in fields}
    preset = next((cols for marker, cols in _MULTI_ROW_COLUMNS if marker <= names), None)
    candidates = [(n, t) for n, t in fields if preset is None or n in preset]
    shown = [(n, t) for n, t in candidates if any(_cell(r.get(n), t) for r in rows)] or fields
    table = Table(title=title)
    for n, t in shown:
        if n in _ID_COLUMNS:
            # An id is never cut: the column is as wide as its longest id, others fold first.
            longest = max([len(n), *(len(_cell(r.get(n), t)) for r in rows)])
            table.add_column(n, no_wrap=True, min_width=longest)
        else:
            table.add_column(n, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(n), t) for n, t in shown))
    if not rows:
        table.caption = "no rows"
        table.min_width = 12
    return table
