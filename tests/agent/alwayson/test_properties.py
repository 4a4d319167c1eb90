"""Hypothesis properties: round trips of every base type, shapes, tables and messages, and the
decoders' contract on arbitrary bytes (a message, None, or an AlwaysOnError; nothing else)."""

from __future__ import annotations

import contextlib
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.alwayson import (
    AlwaysOnError,
    BaseType,
    InfoTable,
    MessageAssembler,
    decode_infotable,
    decode_message,
    decode_value,
    encode_infotable,
    encode_message,
    encode_value,
)
from agent.alwayson.valuecodec import read_rows_checked, read_shape, write_rows_checked

from .strategies import SCALAR_TYPES, cell_value, infotables, messages, scalar_value, variants

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.sampled_from(SCALAR_TYPES).flatmap(lambda t: st.tuples(st.just(t), scalar_value(t))))
def test_scalar_round_trip(case: tuple[BaseType, Any]) -> None:
    base_type, value = case
    data = encode_value(base_type, value)
    expected_type = BaseType.NOTHING if value is None else base_type
    assert decode_value(data) == (expected_type, value)


@FAST
@given(variants())
def test_variant_round_trip(value: Any) -> None:
    assert decode_value(encode_value(BaseType.VARIANT, value)) == (BaseType.VARIANT, value)


@FAST
@given(infotables())
def test_infotable_round_trip(table: InfoTable) -> None:
    data = encode_infotable(table)
    assert decode_infotable(data) == table
    assert decode_value(encode_value(BaseType.INFOTABLE, table)) == (BaseType.INFOTABLE, table)


@FAST
@given(infotables())
def test_fast_and_checked_row_codecs_agree(table: InfoTable) -> None:
    fast = encode_infotable(table)
    checked = bytearray()
    from agent.alwayson.valuecodec import write_shape

    write_shape(checked, table.shape, cached=False)
    write_rows_checked(checked, table)
    assert fast == bytes(checked)
    shape, pos = read_shape(fast, 0, cached=False)
    rows, end = read_rows_checked(fast, pos, shape)
    assert end == len(fast)
    assert decode_infotable(fast).rows == rows


@FAST
@given(messages)
def test_message_round_trip(msg: Any) -> None:
    [data] = encode_message(msg, chunk_size=1 << 20, max_message_size=1 << 22)
    assert decode_message(data) == msg
    assert MessageAssembler().feed(data, 0.0) == msg


@FAST
@given(messages, messages, st.integers(130, 400), st.randoms(use_true_random=False))
def test_multipart_interleaved_shuffled(a: Any, b: Any, chunk: int, rnd: random.Random) -> None:
    big = 1 << 24
    ca = encode_message(a, chunk_size=chunk, max_message_size=big)
    cb = encode_message(b, chunk_size=chunk, max_message_size=big)
    same_set = (a.request_id == b.request_id) and (
        (getattr(a, "status", 0) >= 0x40) == (getattr(b, "status", 0) >= 0x40)
    )
    for c in ca + cb:
        assert len(c) <= chunk
    assembler = MessageAssembler(max_message_size=big)
    if same_set:
        cb = []
    ka, kb = list(ca), list(cb)
    rnd.shuffle(ka)
    rnd.shuffle(kb)
    merged = []
    while ka or kb:
        source = ka if (ka and (not kb or rnd.random() < 0.5)) else kb
        merged.append(source.pop(0))
    out = [m for m in (assembler.feed(p, 1.0) for p in merged) if m is not None]
    expected = [a] if same_set else [a, b]
    assert sorted(out, key=repr) == sorted(expected, key=repr)
    assert assembler.pending == 0


def _contract(data: bytes) -> None:
    with contextlib.suppress(AlwaysOnError):
        decode_message(data)
    with contextlib.suppress(AlwaysOnError):
        decode_infotable(data)
    with contextlib.suppress(AlwaysOnError):
        decode_value(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_alwayson_errors(data: bytes) -> None:
    _contract(data)
    _contract(b"\x01" + data)
    _contract(b"\x01\x40" + b"\x00" * 13 + data)
    _contract(b"\x01\x03" + b"\x00" * 13 + data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
       st.integers(0, 3), st.integers(0, 400))  # fmt: skip
def test_mutated_messages(msg: Any, flips: list[tuple[int, int]], op: int, cut: int) -> None:
    data = bytearray(encode_message(msg, chunk_size=1 << 20, max_message_size=1 << 22)[0])
    for where, byte in flips:
        data[where % len(data)] = byte
    if op == 1:
        del data[cut % len(data) :]
    elif op == 2:
        data[cut % len(data) : cut % len(data)] = bytes(flip[1] for flip in flips)
    _contract(bytes(data))
    assembler = MessageAssembler()
    for payload in (bytes(data), bytes(data[: len(data) // 2]), bytes(data)):
        with contextlib.suppress(AlwaysOnError):
            assembler.feed(payload, 0.0)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=60), max_size=8))
def test_assembler_arbitrary_payloads(payloads: list[bytes]) -> None:
    assembler = MessageAssembler(max_message_size=4096)
    for i, payload in enumerate(payloads):
        for data in (payload, b"\x01\x03\x00\x00\x00\x01" + b"\x00" * 8 + b"\x01" + payload):
            with contextlib.suppress(AlwaysOnError):
                assembler.feed(data, float(i))


@FAST
@given(st.sampled_from(SCALAR_TYPES).flatmap(lambda t: st.tuples(st.just(t), cell_value(t, 0))))
def test_nothing_cells_and_missing_keys(case: tuple[BaseType, Any]) -> None:
    from agent.alwayson import DataShape, FieldDefinition

    base_type, value = case
    shape = DataShape.of(FieldDefinition("a", base_type), FieldDefinition("b", BaseType.STRING))
    table = InfoTable(shape, [{"a": value}, {"b": "x"}, {}])
    decoded = decode_infotable(encode_infotable(table))
    assert decoded == table
    assert decoded.rows[2] == {"a": None, "b": None}
