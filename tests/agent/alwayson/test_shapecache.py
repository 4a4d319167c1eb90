"""The DataShape caches of the codec: same bytes and same shapes as the uncached path, bounded."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.alwayson import BaseType, DataShape, FieldDefinition, InfoTable, Variant
from agent.alwayson.rowcodec import row_codec
from agent.alwayson.shapecache import (
    DEFAULT_SIZE,
    MIN_CACHED_BYTES,
    DecodedShapeCache,
    IdentityCache,
    is_frozen,
)
from agent.alwayson.valuecodec import (
    DECODED_SHAPES,
    ENCODED_SHAPES,
    decode_infotable,
    encode_infotable,
    read_shape,
    write_shape,
)

from .strategies import infotables, shapes

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _encoded(shape: DataShape, *, cached: bool) -> bytes:
    out = bytearray()
    write_shape(out, shape, cached=cached)
    return bytes(out)


def _wide(prefix: str, n: int = 4) -> DataShape:
    return DataShape(
        tuple(
            FieldDefinition(f"{prefix}{i}", BaseType.STRING, f"column {i} of {prefix}")
            for i in range(n)
        )
    )


@FAST
@given(shapes(), st.binary(max_size=8))
def test_cached_and_uncached_paths_give_the_same_bytes_and_shapes(
    shape: DataShape, tail: bytes
) -> None:
    fresh = _encoded(shape, cached=False)
    assert _encoded(shape, cached=True) == fresh  # a miss (or an earlier hit)
    assert _encoded(shape, cached=True) == fresh  # a hit, if the shape is frozen
    data = b"\x07" + fresh + tail  # whatever follows the end-of-fields marker
    reference = read_shape(data, 1, cached=False)
    for _ in range(2):
        decoded, end = read_shape(data, 1)
        assert (decoded, end) == reference
        assert end == 1 + len(fresh)
        assert decoded == DataShape(shape.fields)  # the wire carries no shape name


@FAST
@given(infotables())
def test_tables_round_trip_through_warm_caches(table: InfoTable) -> None:
    first = encode_infotable(table)
    assert encode_infotable(table) == first
    assert decode_infotable(first) == table
    assert decode_infotable(first) == table


def test_a_frozen_decoded_shape_is_shared_and_a_mutable_one_is_not() -> None:
    frozen = DataShape((FieldDefinition("jobId", BaseType.STRING, "the job's id", {"a": 1}),))
    data = _encoded(frozen, cached=False)
    assert len(data) >= MIN_CACHED_BYTES
    assert read_shape(data, 0)[0] is read_shape(data, 0)[0]
    mutable = DataShape(
        (
            FieldDefinition(
                "jobId", BaseType.STRING, "the job's id", {"a": Variant(BaseType.JSON, [1])}
            ),
        )
    )
    assert not is_frozen(mutable)
    data = _encoded(mutable, cached=False)
    one, two = read_shape(data, 0)[0], read_shape(data, 0)[0]
    assert one == two and one is not two
    assert one.fields[0].aspects["a"] == [1]


def test_equal_shapes_that_encode_differently_keep_their_own_bytes() -> None:
    # 1 == True, but an INTEGER aspect is not a BOOLEAN one: the cache is keyed by identity.
    as_int = DataShape((FieldDefinition("x", BaseType.STRING, "", {"flag": 1}),))
    as_bool = DataShape((FieldDefinition("x", BaseType.STRING, "", {"flag": True}),))
    assert as_int == as_bool
    assert _encoded(as_int, cached=True) == _encoded(as_int, cached=False)
    assert _encoded(as_bool, cached=True) == _encoded(as_bool, cached=False)
    assert _encoded(as_int, cached=True) != _encoded(as_bool, cached=True)


def test_a_cached_encoding_is_only_a_hit_where_the_data_holds_all_of_it() -> None:
    shape = _wide("hit")
    data = _encoded(shape, cached=False)
    read_shape(data, 0)
    # Same first bytes, another last character of the last description (then type, count, end).
    changed = data[:-5] + b"X" + data[-4:]
    decoded, _ = read_shape(changed, 0)
    assert decoded == read_shape(changed, 0, cached=False)[0]
    assert decoded != shape
    assert read_shape(data, 0)[0] == DataShape(shape.fields)


def test_identity_cache_is_bounded_and_keeps_its_objects() -> None:
    cache: IdentityCache[int] = IdentityCache(size=4)
    calls: list[object] = []

    def compute(obj: object) -> int:
        calls.append(obj)
        return len(calls)

    objects = [object() for _ in range(10)]
    for obj in objects:
        cache.get(obj, compute)
    assert len(cache) == 4
    assert cache.get(objects[-1], compute) == 10  # a hit: not computed again
    assert len(calls) == 10
    assert cache.get(objects[0], compute) == 11  # evicted: computed again


def test_decoded_shape_cache_is_bounded() -> None:
    cache = DecodedShapeCache(size=5)
    encodings = []
    for i in range(12):
        shape = _wide(f"s{i:02d}_")
        data = _encoded(shape, cached=False)
        encodings.append((data, shape))
        cache.remember(data, shape)
        assert len(cache) <= 5
    assert len(cache) == 5
    assert cache.lookup(encodings[-1][0], 0) == (encodings[-1][1], len(encodings[-1][0]))
    assert cache.lookup(encodings[0][0], 0) is None


def test_one_bucket_of_shapes_sharing_their_first_bytes_is_bounded() -> None:
    cache = DecodedShapeCache(size=100)
    base = "a" * MIN_CACHED_BYTES
    for i in range(20):
        shape = DataShape((FieldDefinition(base, BaseType.STRING, f"variant {i}"),))
        cache.remember(_encoded(shape, cached=False), shape)
    assert len(cache) <= 16
    last = DataShape((FieldDefinition(base, BaseType.STRING, "variant 19"),))
    data = _encoded(last, cached=False)
    assert cache.lookup(data, 0) == (last, len(data))


def test_the_empty_shape_is_answered_without_reading() -> None:
    assert read_shape(b"\x00\x01\x00\x00", 0) == (DataShape(()), 1)
    assert read_shape(b"\x05\x00", 1) == read_shape(b"\x05\x00", 1, cached=False)


def test_the_codec_caches_stay_bounded() -> None:
    for i in range(DEFAULT_SIZE + 40):
        shape = _wide(f"bounded{i}_")
        data = _encoded(shape, cached=True)
        read_shape(data, 0)
        row_codec(shape)
    assert len(ENCODED_SHAPES) <= DEFAULT_SIZE
    assert len(DECODED_SHAPES) <= DEFAULT_SIZE


def test_single_value_tables_share_their_shape() -> None:
    one = InfoTable.single("result", BaseType.STRING, "a")
    two = InfoTable.single("result", BaseType.STRING, "b")
    assert one.shape is two.shape
    assert one.shape == DataShape((FieldDefinition("result", BaseType.STRING),))
