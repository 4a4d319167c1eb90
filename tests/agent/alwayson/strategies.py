"""Hypothesis strategies for AlwaysOn values, InfoTables and messages."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from agent.alwayson import (
    Auth,
    BaseType,
    Bind,
    Characteristic,
    DataShape,
    EntityType,
    FieldDefinition,
    InfoTable,
    Location,
    Method,
    Request,
    Response,
    Status,
    Variant,
)
from agent.alwayson.basetypes import STRING_LIKE_TYPES
from agent.alwayson.values import datetime_from_millis

MIN_MS = -62_135_596_800_000  # 0001-01-01
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999

texts = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40
)
long_texts = st.one_of(texts, st.text(alphabet="abcé€😀", min_size=120, max_size=300))
names = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    min_size=1,
    max_size=30,
)
floats = st.floats(allow_nan=False)
json_values = st.recursive(  # JSON has no infinities (they are refused on encoding)
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=10,
)
datetimes = st.integers(MIN_MS, MAX_MS).map(datetime_from_millis)
locations = st.builds(Location, floats, floats, floats)

SCALAR_TYPES = [t for t in BaseType if t not in (BaseType.INFOTABLE, BaseType.VARIANT)]


def scalar_value(base_type: BaseType) -> st.SearchStrategy[Any]:
    if base_type in STRING_LIKE_TYPES:
        return long_texts
    return {
        BaseType.NOTHING: st.none(),
        BaseType.NUMBER: floats,
        BaseType.INTEGER: st.integers(-(2**31), 2**31 - 1),
        BaseType.LONG: st.integers(-(2**63), 2**63 - 1),
        BaseType.TIMESPAN: st.integers(-(2**63), 2**63 - 1),
        BaseType.BOOLEAN: st.booleans(),
        BaseType.DATETIME: datetimes,
        BaseType.JSON: json_values,
        BaseType.LOCATION: locations,
        BaseType.IMAGE: st.binary(max_size=40),
        BaseType.BLOB: st.binary(max_size=300),
    }[base_type]


def variants(depth: int = 0) -> st.SearchStrategy[Variant]:
    return (
        st.sampled_from(SCALAR_TYPES)
        .flatmap(lambda t: scalar_value(t).map(lambda v: Variant(t, v)))
        .filter(lambda v: v.value is not None or v.base_type is BaseType.NOTHING)
    )


aspect_values = st.one_of(
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    floats,
    texts,
    datetimes,
    texts.map(lambda s: Variant(BaseType.THINGNAME, s)),
    st.integers(-(2**31), 2**31 - 1).map(lambda i: Variant(BaseType.LONG, i)),
)
field_types = st.sampled_from([*SCALAR_TYPES, BaseType.VARIANT, BaseType.INFOTABLE])


def _field(depth: int) -> st.SearchStrategy[FieldDefinition]:
    types = field_types if depth < 2 else st.sampled_from([*SCALAR_TYPES, BaseType.VARIANT])
    return st.builds(
        FieldDefinition,
        names,
        types,
        texts,
        st.dictionaries(names, aspect_values, max_size=3),
    )


def cell_value(base_type: BaseType, depth: int) -> st.SearchStrategy[Any]:
    if base_type is BaseType.INFOTABLE:
        return infotables(depth + 1, max_rows=2)
    if base_type is BaseType.VARIANT:
        return variants()
    # Now and then a cell typed other than its column (it decodes back as a Variant).
    other = variants().filter(lambda v: v.base_type not in (base_type, BaseType.NOTHING))
    return st.one_of(scalar_value(base_type), scalar_value(base_type), other)


def shapes(depth: int = 0, max_fields: int = 6) -> st.SearchStrategy[DataShape]:
    return st.lists(_field(depth), max_size=max_fields, unique_by=lambda f: f.name).map(
        lambda fs: DataShape(tuple(fs))
    )


def infotables(depth: int = 0, max_rows: int = 4) -> st.SearchStrategy[InfoTable]:
    def rows_for(shape: DataShape) -> st.SearchStrategy[InfoTable]:
        row = st.fixed_dictionaries(
            {},
            optional={f.name: st.none() | cell_value(f.base_type, depth) for f in shape.fields},
        )
        return st.lists(row, max_size=max_rows).map(lambda rows: InfoTable(shape, rows))

    return shapes(depth).flatmap(rows_for)


uint32 = st.integers(0, 2**32 - 1)
short_names = st.text(alphabet="abcdefghijKLMNOP_0123456789é", min_size=1, max_size=40)
pairs = st.lists(st.tuples(short_names, short_names), max_size=3).map(tuple)

requests = st.builds(
    Request,
    st.sampled_from([Method.GET, Method.PUT, Method.POST, Method.DELETE]),
    uint32,
    uint32,
    uint32,
    st.sampled_from(list(EntityType)),
    short_names,
    st.sampled_from(list(Characteristic)),
    short_names,
    pairs,
    st.none() | infotables(),
)
responses = st.builds(
    Response,
    st.sampled_from(list(Status)),
    uint32,
    uint32,
    uint32,
    st.none() | texts,
    st.none() | infotables(),
)
auths = st.builds(Auth, uint32, pairs, uint32, uint32)
binds = st.builds(
    Bind,
    uint32,
    uint32,
    st.lists(short_names, max_size=5).map(tuple),
    st.none(),
    st.none(),
    st.booleans(),
    uint32,
) | st.builds(
    Bind, uint32, uint32, st.lists(short_names, max_size=5).map(tuple), short_names, short_names
)
messages = st.one_of(requests, responses, auths, binds)
