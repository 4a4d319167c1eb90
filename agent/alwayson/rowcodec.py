"""Fast InfoTable row codecs, compiled once per column layout (reference §4).

Rows dominate the cost of an InfoTable, and a row's layout is fixed by its DataShape, so for each
layout (the tuple of column names and base types) this module generates, once, a Python function
that reads or writes whole rows in straight-line code: column names are constants, runs of
fixed-width columns (NUMBER, INTEGER, LONG, TIMESPAN, BOOLEAN, DATETIME) go through one
precompiled ``struct.Struct`` together with their type bytes, strings are sliced and decoded in
place, and JSON cells are parsed in one ``json.loads`` per column at the end of the table.

The generated code only handles *regular* rows: cells typed as their column (or NOTHING, inline,
outside fixed-width runs) and Python values of the expected types. Anything else makes it give up
on that row (decoding: the row is re-read by the checked reader of
:mod:`agent.alwayson.valuecodec`) or on the table (encoding: the caller re-encodes it checked), so
errors always come from the checked path with its precise messages, and both paths produce the
same bytes and values (a Hypothesis property checks it).

Rules for the generator: only names of this module's namespace and generated local variables
appear in the source; column names and other data are bound as constants (``K0``, ``K1``...), never
pasted into the source text.

Optional C accelerator: when the extension module :mod:`agent.alwayson._rowreader` was built and
imports, ``RowCodec.read_rows`` reads the regular rows in C (one ``RowReader`` per layout, with
the same rules as the generated reader: the same rows, the same irregular rows handed to the
checked reader, the same JSON parsing at the end of the table, so the same values and errors).
The generated Python reader stays the reference and the fallback: it is used when the extension
is missing (no C compiler at install time), when the environment variable
``JOBS_AGENT_PURE_PYTHON`` is set to anything but ``""`` or ``"0"`` at import time, inside
:func:`pure_python` (tests and benchmarks), and for buffers that are not ``bytes``. It is also
``RowCodec.read_rows_pure``. :data:`ACCELERATED` says whether the accelerator is in use.
"""

from __future__ import annotations

import importlib
import json
import json.encoder
import json.scanner
import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

from agent.alwayson import unconfirmed
from agent.alwayson.basetypes import STRING_LIKE_TYPES, BaseType
from agent.alwayson.infotable import DataShape, FieldDefinition
from agent.alwayson.shapecache import IdentityCache
from agent.alwayson.values import EPOCH

__all__ = ["ACCELERATED", "ACCELERATOR", "RowCodec", "pure_python", "row_codec"]


def _load_accelerator() -> tuple[Any, str]:
    """The C extension module (or None) and a word on why it is or is not used."""
    if os.environ.get("JOBS_AGENT_PURE_PYTHON", "") not in ("", "0"):
        return None, "off (JOBS_AGENT_PURE_PYTHON is set)"
    try:
        return importlib.import_module("agent.alwayson._rowreader"), "on (C row reader)"
    except ImportError as exc:
        return None, f"off (extension not built: {exc})"


_rowreader, ACCELERATOR = _load_accelerator()
ACCELERATED: bool = _rowreader is not None
"""Whether ``RowCodec.read_rows`` uses the C row reader (fixed at import time)."""
_pure = False  # set by pure_python(): the generated reader is used even when ACCELERATED

_MS = timedelta(milliseconds=1)

# Fixed-width base types: struct code for writing, struct code for reading.
_FIXED: dict[BaseType, tuple[str, str]] = {
    BaseType.NUMBER: ("d", "d"),
    BaseType.INTEGER: ("i", "i"),
    BaseType.LONG: (unconfirmed.LONG_STRUCT.format[1:], unconfirmed.LONG_STRUCT.format[1:]),
    BaseType.TIMESPAN: (
        unconfirmed.TIMESPAN_STRUCT.format[1:],
        unconfirmed.TIMESPAN_STRUCT.format[1:],
    ),
    BaseType.BOOLEAN: ("B", "?"),
    BaseType.DATETIME: ("q", "q"),
}

# json's own scanner (the C one where available), called per cell: it parses one value at the
# start of the text and says where it ended, so a cell that is not exactly one JSON value is
# caught, and no per-cell json.loads set-up is paid.
_make_scanner: Any = json.scanner.make_scanner  # typeshed types it as a class
_JSON_SCAN: Any = _make_scanner(json.JSONDecoder())
_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
# The C accelerator behind json.dumps, called directly: no encoder set-up per cell. Same output
# as _JSON_ENCODER (compact, UTF-8, no NaN); falls back to it where the accelerator is missing.
_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_json_text: Callable[[Any], str] = _JSON_ENCODER.encode
if _c_make_encoder is not None:
    _c_json = _c_make_encoder(
        None, _JSON_ENCODER.default, json.encoder.encode_basestring, None, ":", ",",
        False, False, False,
    )  # fmt: skip

    def _json_text(value: Any) -> str:
        return "".join(_c_json(value, 0))


def _string_prefixes(type_byte: int) -> tuple[bytes, ...]:
    """Type byte + 1-byte length, for every length under 128."""
    return tuple(bytes((type_byte, n)) for n in range(128))


def _long_prefix(type_byte: int, length: int) -> bytes:
    if length > 0x7FFFFFFF:
        raise OverflowError("string too long")
    return bytes((type_byte,)) + struct.pack(">I", 0x80000000 | length)


_CODECS: IdentityCache[RowCodec] = IdentityCache()


class _Irregular(Exception):
    """Raised inside generated code: this row is not for the fast path."""


@dataclass(frozen=True)
class RowCodec:
    """The compiled row reader and writer of one column layout.

    Attributes:
        write_rows: ``(out: bytearray, rows) -> None``; appends the rows and the end marker.
            Raises any exception on a row it cannot write: the caller re-encodes checked.
        read_rows: ``(buf, pos, depth) -> (rows, pos)``; reads rows up to and including the end
            marker; irregular rows are re-read by the checked reader, which raises the errors.
            The C reader when :data:`ACCELERATED` (outside :func:`pure_python`), else the same
            function as ``read_rows_pure``.
        read_rows_pure: the generated Python reader: same signature, same results and errors.
    """

    write_rows: Callable[[bytearray, list[dict[str, Any]]], None]
    read_rows: Callable[[bytes, int, int], tuple[list[dict[str, Any]], int]]
    read_rows_pure: Callable[[bytes, int, int], tuple[list[dict[str, Any]], int]]


def row_codec(shape: DataShape) -> RowCodec:
    """The row codec of ``shape`` (compiled on first use, then cached by column layout, and by
    shape object so that a shape used again skips building and hashing its layout)."""
    return _CODECS.get(shape, _codec_of_layout)


@contextmanager
def pure_python() -> Iterator[None]:
    """Within this block, every ``read_rows`` uses the generated Python reader (for tests and
    benchmarks: the switch is process-wide, not per thread)."""
    global _pure
    before = _pure
    _pure = True
    try:
        yield
    finally:
        _pure = before


def _codec_of_layout(shape: DataShape) -> RowCodec:
    return _compile(tuple((f.name, f.base_type) for f in shape.fields))


def _runs(layout: tuple[tuple[str, BaseType], ...]) -> list[list[int]]:
    """Group column indexes: consecutive fixed-width columns together, others alone."""
    runs: list[list[int]] = []
    for i, (_, bt) in enumerate(layout):
        if bt in _FIXED and runs and layout[runs[-1][-1]][1] in _FIXED:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


@lru_cache(maxsize=256)
def _compile(layout: tuple[tuple[str, BaseType], ...]) -> RowCodec:
    from agent.alwayson import valuecodec  # valuecodec imports this module lazily

    n = len(layout)
    ns: dict[str, Any] = {
        "_Irregular": _Irregular,
        "EPOCH": EPOCH,
        "MS": _MS,
        "U32": struct.Struct(">I"),
        "NOTH": b"\xff",
        "ROWHDR": b"\x01" + struct.pack(">H", n & 0xFFFF),
        "CNT_HI": (n >> 8) & 0xFF,
        "CNT_LO": n & 0xFF,
        "BOOLV": {True: 1, False: 0},
        "json_text": _json_text,
        "json_cell_bytes": valuecodec.json_cell_bytes,
        "json_scan": _JSON_SCAN,
        "long_prefix": _long_prefix,
        "write_typed": valuecodec.write_typed,
        "read_row_checked": valuecodec.read_row_checked,
        "KEYS": frozenset(name for name, _ in layout),
        "bytearray": bytearray,
        "len": len,
    }
    ns["COLUMNS"] = valuecodec.checked_columns(
        DataShape(tuple(FieldDefinition(name, bt) for name, bt in layout))
    )
    for i, (name, bt) in enumerate(layout):
        ns[f"K{i}"] = name
        ns[f"BT{i}"] = bt
        ns[f"TB{i}"] = bt.wire_byte
        if bt in STRING_LIKE_TYPES or bt is BaseType.JSON:
            ns[f"SP{i}"] = _string_prefixes(bt.wire_byte)
        ns[f"R{i}"] = valuecodec.CELL_READERS.get(bt.wire_byte)
    runs = _runs(layout)
    write_src = _write_source(layout, runs, ns)
    read_src = _read_source(layout, runs, ns)
    # Every constant becomes a keyword-only default: a fast local inside the generated loops.
    consts = ", ".join(f"{name}={name}" for name in sorted(ns) if name.isidentifier())
    write_src = write_src.replace(
        "def write_rows(out, rows):", f"def write_rows(out, rows, *, {consts}):"
    )
    read_src = read_src.replace(
        "def read_rows(buf, pos, depth):", f"def read_rows(buf, pos, depth, *, {consts}):"
    )
    exec(compile(write_src + "\n" + read_src, f"<alwayson rows {len(layout)} cols>", "exec"), ns)
    pure = ns["read_rows"]
    read = pure if _rowreader is None else _accelerated(layout, runs, ns, pure)
    return RowCodec(ns["write_rows"], read, pure)


# ---------------------------------------------------------------------------------- encoding


def _write_cell(i: int, bt: BaseType, ns: dict[str, Any], ind: str) -> list[str]:
    v = f"v{i}"
    if bt in STRING_LIKE_TYPES or bt is BaseType.JSON:
        text = f"json_text({v})" if bt is BaseType.JSON else v
        return [
            f"{ind}if {v} is None:",
            f"{ind}    ap(NOTH)",
            f"{ind}else:",
            f"{ind}    e = {text}.encode()",
            f"{ind}    if b'\\x00' in e:",
            f"{ind}        raise _Irregular",
            f"{ind}    n = len(e)",
            f"{ind}    ap(SP{i}[n] if n < 128 else long_prefix(TB{i}, n))",
            f"{ind}    ap(e)",
        ]
    if bt in _FIXED:
        ns[f"S{i}"] = struct.Struct(">B" + _FIXED[bt][0])
        return [
            f"{ind}if {v} is None:",
            f"{ind}    ap(NOTH)",
            f"{ind}else:",
            f"{ind}    ap(S{i}.pack(TB{i}, {_to_wire(bt, v)}))",
        ]
    return [
        f"{ind}if {v} is None:",
        f"{ind}    ap(NOTH)",
        f"{ind}else:",
        f"{ind}    tmp = bytearray()",
        f"{ind}    write_typed(tmp, BT{i}, {v})",
        f"{ind}    ap(tmp)",
    ]


def _to_wire(bt: BaseType, v: str) -> str:
    if bt is BaseType.DATETIME:
        return f"({v} - EPOCH) // MS"
    if bt is BaseType.BOOLEAN:
        return f"BOOLV[{v}]"
    return v


def _write_source(
    layout: tuple[tuple[str, BaseType], ...], runs: list[list[int]], ns: dict[str, Any]
) -> str:
    lines = [
        "def write_rows(out, rows):",
        "    parts = []",
        "    ap = parts.append",
        "    for row in rows:",
        "        if not KEYS.issuperset(row):",
        "            raise _Irregular",
    ]
    if layout:
        lines.append(
            "        " + ", ".join(f"v{i}" for i in range(len(layout))) + (","
            if len(layout) == 1 else "")
            + " = " + ", ".join(f"row.get(K{i})" for i in range(len(layout)))
            + ("," if len(layout) == 1 else "")
        )  # fmt: skip
    lines.append("        ap(ROWHDR)")
    for r, run in enumerate(runs):
        bt = layout[run[0]][1]
        if len(run) > 1:
            ns[f"RUN{r}"] = struct.Struct(">" + "".join("B" + _FIXED[layout[i][1]][0] for i in run))
            args = ", ".join(f"TB{i}, {_to_wire(layout[i][1], f'v{i}')}" for i in run)
            nones = " or ".join(f"v{i} is None" for i in run)
            lines.append(f"        if {nones}:")
            for i in run:
                lines += _write_cell(i, layout[i][1], ns, "            ")
            lines.append("        else:")
            lines.append(f"            ap(RUN{r}.pack({args}))")
        else:
            lines += _write_cell(run[0], bt, ns, "        ")
    lines += [
        "    ap(b'\\x00')",
        "    out += b''.join(parts)",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- decoding


def _read_cell(i: int, bt: BaseType, ind: str, ns: dict[str, Any]) -> list[str]:
    """Read cell ``i`` whose type byte is at ``pos``; leave ``pos`` after it."""
    v = f"v{i}"
    if bt in STRING_LIKE_TYPES or bt is BaseType.JSON:
        # A string running past the end is not checked here: the next read (a cell, the next
        # row marker, the end marker) is then out of range and raises, and the checked reader
        # reports it.
        lines = [
            f"{ind}tb = buf[pos]",
            f"{ind}if tb == TB{i}:",
            f"{ind}    n = buf[pos + 1]",
            f"{ind}    if n < 128:",
            f"{ind}        b = pos + 2",
            f"{ind}    else:",
            f"{ind}        n = U32.unpack_from(buf, pos + 1)[0] & 0x7FFFFFFF",
            f"{ind}        b = pos + 5",
            f"{ind}    pos = b + n",
        ]
        lines += _take_text(i, bt, f"{ind}    ")
        lines += [
            f"{ind}elif tb == 255:",
            f"{ind}    {v} = None",
            f"{ind}    pos += 1",
        ]
        if bt is BaseType.JSON:
            lines += [f"{ind}    jap{i}(None)"]
        lines += [f"{ind}else:", f"{ind}    raise _Irregular"]
        return lines
    if bt in _FIXED:
        ns[f"U{i}"] = struct.Struct(">B" + _FIXED[bt][1])
        size = ns[f"U{i}"].size
        return [
            f"{ind}tb = buf[pos]",
            f"{ind}if tb == TB{i}:",
            f"{ind}    {v} = {_from_wire(bt, f'U{i}.unpack_from(buf, pos)[1]')}",
            f"{ind}    pos += {size}",
            f"{ind}elif tb == 255:",
            f"{ind}    {v} = None",
            f"{ind}    pos += 1",
            f"{ind}else:",
            f"{ind}    raise _Irregular",
        ]
    return [
        f"{ind}tb = buf[pos]",
        f"{ind}if tb == TB{i}:",
        f"{ind}    {v}, pos = R{i}(buf, pos + 1, depth)",
        f"{ind}elif tb == 255:",
        f"{ind}    {v} = None",
        f"{ind}    pos += 1",
        f"{ind}else:",
        f"{ind}    raise _Irregular",
    ]


def _take_text(i: int, bt: BaseType, ind: str) -> list[str]:
    """The text of string cell ``i`` is ``buf[b:pos]``: decode it, or queue it if JSON."""
    if bt is BaseType.JSON:
        # Kept as bytes: the column is joined and decoded once, then parsed in one call.
        return [f"{ind}jap{i}(buf[b:pos])", f"{ind}v{i} = None"]
    return [f"{ind}v{i} = buf[b:pos].decode()"]


def _from_wire(bt: BaseType, expr: str) -> str:
    if bt is BaseType.DATETIME:
        return f"EPOCH + MS * {expr}"
    return expr


def _read_source(
    layout: tuple[tuple[str, BaseType], ...], runs: list[list[int]], ns: dict[str, Any]
) -> str:
    json_cols = [i for i, (_, bt) in enumerate(layout) if bt is BaseType.JSON]
    lines = [
        "def read_rows(buf, pos, depth):",
        "    rows = []",
        "    ap = rows.append",
    ]
    for i in json_cols:
        lines += [f"    jt{i} = []", f"    jap{i} = jt{i}.append"]
    lines += [
        "    while True:",
        "        start = pos",
        "        if buf[pos] != 1:",
        "            break",
        "        try:",
        "            if buf[pos + 1] != CNT_HI or buf[pos + 2] != CNT_LO:",
        "                raise _Irregular",
        "            pos += 3",
    ]
    ind = "            "
    header_read = -1  # a string column whose type byte and short length the last run read
    run_size = 0  # the size of that run, which its reader has not yet added to pos
    for r, run in enumerate(runs):
        first = run[0]
        if first == header_read:
            lines += _read_preread_text(first, layout[first][1], run_size, ind, ns)
        elif len(run) > 1:
            lines += _read_run(r, run, layout, ind, ns)
            header_read = run[-1] + 1 if _text_follows(run, layout) else -1
            run_size = ns[f"RUN{r}R"].size - (2 if header_read >= 0 else 0)
        else:
            lines += _read_cell(first, layout[first][1], ind, ns)
    row = "{" + ", ".join(f"K{i}: v{i}" for i in range(len(layout))) + "}"
    lines += [
        f"{ind}ap({row})",
        "        except Exception:",
    ]
    # An irregular row: forget what this row collected, re-read it checked (which raises the
    # precise error if it is bad).
    for i in json_cols:
        lines += [f"            del jt{i}[len(rows):]"]
    lines += [
        "            one, pos = read_row_checked(buf, start, COLUMNS, depth)",
        "            ap(one)",
    ]
    for i in json_cols:
        lines += [f"            jap{i}(None)"]
    lines += [
        "    if buf[pos] != 0:",
        "        raise _Irregular",
    ]
    for i in json_cols:
        # Each cell is scanned on its own (one JSON value, nothing after it); anything else —
        # whitespace around the value, bad UTF-8, invalid JSON — goes to the checked parser, which
        # accepts the first and raises the precise ProtocolError for the others. (Parsing the
        # joined column in one json.loads is faster but accepts cells such as `1,2` / `[3` / `4]`.)
        lines += [
            f"    texts = jt{i}",
            "    complete = None not in texts",
            "    if not complete:",
            "        texts = [t for t in texts if t is not None]",
            "    if texts:",
            "        values = []",
            "        vap = values.append",
            "        for t in texts:",
            "            try:",
            "                s = t.decode()",
            "                v, e = json_scan(s, 0)",
            "                if e != len(s):",
            "                    raise ValueError",
            "            except Exception:",
            "                v = json_cell_bytes(t)",
            "            vap(v)",
            "        if complete:",
            "            for row, value in zip(rows, values):",
            f"                row[K{i}] = value",
            "        else:",
            "            it = iter(values)",
            f"            for row, t in zip(rows, jt{i}):",
            "                if t is not None:",
            f"                    row[K{i}] = next(it)",
        ]
    lines.append("    return rows, pos + 1")
    return "\n".join(lines) + "\n"


def _text_follows(run: list[int], layout: tuple[tuple[str, BaseType], ...]) -> bool:
    nxt = run[-1] + 1
    return nxt < len(layout) and (
        layout[nxt][1] in STRING_LIKE_TYPES or layout[nxt][1] is BaseType.JSON
    )


def _read_run(
    r: int, run: list[int], layout: tuple[tuple[str, BaseType], ...], ind: str, ns: dict[str, Any]
) -> list[str]:
    """A run of fixed-width columns in one unpack, with the next string's header if there is one.

    When a type byte of the run is not its column's (a NOTHING cell, typically an absent optional
    value), the run's cells are read again one by one from the run's start, each accepting
    NOTHING; any other type byte makes the row irregular. The header of a following string
    column (its type byte and a length byte) is read by the same unpack: there is always at
    least one byte after a type byte in a well-formed table (the end-of-rows marker at least).
    """
    fmt = ">" + "".join("B" + _FIXED[layout[i][1]][1] for i in run)
    size = struct.calcsize(fmt)
    targets = ", ".join(f"t{i}, v{i}" for i in run)
    text_follows = _text_follows(run, layout)
    if text_follows:
        fmt += "BB"
        targets += f", t{run[-1] + 1}, n"
    ns[f"RUN{r}R"] = struct.Struct(fmt)
    checks = " or ".join(f"t{i} != TB{i}" for i in run)
    lines = [
        f"{ind}{targets} = RUN{r}R.unpack_from(buf, pos)",
        f"{ind}if {checks}:",
    ]
    for i in run:
        lines += _read_cell(i, layout[i][1], f"{ind}    ", ns)
    if text_follows:
        # The string's header was not read with the run: rewind by the run's fixed size, which
        # the string's reader adds back when it finds no pre-read header (t = -1).
        lines += [f"{ind}    pos -= {size}", f"{ind}    t{run[-1] + 1} = -1"]
    lines.append(f"{ind}else:")
    datetimes = [i for i in run if layout[i][1] is BaseType.DATETIME]
    for i in datetimes:
        lines.append(f"{ind}    v{i} = EPOCH + MS * v{i}")
    if not text_follows:
        lines.append(f"{ind}    pos += {size}")  # the string's reader advances pos past the run
    elif not datetimes:
        lines.append(f"{ind}    pass")
    return lines


def _read_preread_text(
    i: int, bt: BaseType, run_size: int, ind: str, ns: dict[str, Any]
) -> list[str]:
    """String cell ``i`` at ``pos + run_size``; its type byte ``t{i}`` and first length byte
    ``n`` were read with the run before it."""
    return [
        f"{ind}if t{i} == TB{i} and n < 128:",
        f"{ind}    b = pos + {run_size + 2}",
        f"{ind}    pos = b + n",
        *_take_text(i, bt, f"{ind}    "),
        f"{ind}else:",
        f"{ind}    pos += {run_size}",
        *_read_cell(i, bt, f"{ind}    ", ns),
    ]


# ------------------------------------------------------------------------- the C accelerator

# Kind of each base type for the C RowReader (see _rowreader.c); others are "r": read by calling
# their cell reader of valuecodec.CELL_READERS.
_C_KINDS: dict[BaseType, str] = {
    BaseType.NUMBER: "d",
    BaseType.INTEGER: "i",
    BaseType.BOOLEAN: "?",
    BaseType.DATETIME: "T",
    BaseType.JSON: "j",
    **{bt: "s" for bt in STRING_LIKE_TYPES},
}
# LONG and TIMESPAN are read in C only while unconfirmed.py says they are big-endian int64.
_INT64_STRUCTS = {
    BaseType.LONG: unconfirmed.LONG_STRUCT,
    BaseType.TIMESPAN: unconfirmed.TIMESPAN_STRUCT,
}
_C_KINDS.update({bt: "q" for bt, s in _INT64_STRUCTS.items() if s.format == ">q"})


def _accelerated(
    layout: tuple[tuple[str, BaseType], ...],
    runs: list[list[int]],
    ns: dict[str, Any],
    pure: Callable[[bytes, int, int], tuple[list[dict[str, Any]], int]],
) -> Callable[[bytes, int, int], tuple[list[dict[str, Any]], int]]:
    """``read_rows`` on the C RowReader of ``layout``, with the generated reader's rules.

    The C reader stops at the first row it does not read (irregular, or not a row marker); that
    row is read here by the checked reader, as the generated reader does, then C goes on. The
    end marker and the JSON parsing come last, in the same order as in the generated reader.
    """
    # A run of fixed-width columns is one struct unpack in the generated reader (with the next
    # string's header when one follows): the C reader needs the same bytes there, or the row
    # is irregular.
    need = [0] * len(layout)
    for r, run in enumerate(runs):
        if len(run) > 1:
            need[run[0]] = ns[f"RUN{r}R"].size
    columns = tuple(
        (name, bt.wire_byte, _C_KINDS.get(bt, "r"), need[i], ns[f"R{i}"])
        for i, (name, bt) in enumerate(layout)
    )
    reader = _rowreader.RowReader(columns, EPOCH.tzinfo, _JSON_SCAN, ns["json_cell_bytes"])
    read = reader.read
    parse_json = reader.parse_json
    njson = sum(1 for _, bt in layout if bt is BaseType.JSON)
    checked_columns = ns["COLUMNS"]
    read_row_checked = ns["read_row_checked"]

    def read_rows(buf: bytes, pos: int, depth: int) -> tuple[list[dict[str, Any]], int]:
        if _pure or type(buf) is not bytes or pos < 0:
            return pure(buf, pos, depth)
        rows: list[dict[str, Any]] = []
        pending: list[list[bytes | None]] = [[] for _ in range(njson)]
        while True:
            pos = read(buf, pos, depth, rows, pending)
            if buf[pos] != 1:  # the end marker, or bad data (IndexError past the end)
                break
            row, pos = read_row_checked(buf, pos, checked_columns, depth)
            rows.append(row)
            for texts in pending:
                texts.append(None)
        if buf[pos] != 0:
            raise _Irregular
        if njson:
            parse_json(rows, pending)
        return rows, pos + 1

    return read_rows
