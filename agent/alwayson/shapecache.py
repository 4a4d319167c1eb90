"""Bounded caches of the codec's per-DataShape work: encoded shapes, decoded shapes, row codecs.

A service answers with the same DataShape on every call (a module constant), and a peer sends the
same shape bytes on every call, so encoding and decoding the field definitions (names,
descriptions, aspects) again each time is wasted work. Two caches remove it:

- :class:`IdentityCache` maps a DataShape *object* to what was computed from it (its encoded
  bytes, its row codec). It is keyed by identity, not equality: equal shapes may encode
  differently (an aspect ``1`` equals ``True`` and ``1.0`` but is INTEGER, not BOOLEAN or NUMBER,
  on the wire). Each entry holds the shape itself, so its id cannot be reused while the entry
  lives.
- :class:`DecodedShapeCache` maps the exact bytes of a shape's field definitions to the decoded
  :class:`DataShape`. A lookup checks that the data at the read position *starts with* a cached
  encoding; since a shape's encoding ends at its own end-of-fields marker and is read by structure
  alone, those bytes decode to that shape whatever follows them.

Rules: both caches are bounded (oldest entry out first); only *frozen* shapes are cached, whose
aspect values are all immutable (``str``, numbers, ``bool``, ``None``, ``datetime``,
``timedelta``, ``bytes``, :class:`Location`, or a :class:`Variant` of those), so that sharing one
decoded shape between calls, or trusting bytes encoded earlier, can never leak a later mutation.
Lookups take no lock (a dict read is atomic); insertions do. No I/O, no logging.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from agent.alwayson.basetypes import Location, Variant
from agent.alwayson.infotable import DataShape

__all__ = ["DEFAULT_SIZE", "MIN_CACHED_BYTES", "DecodedShapeCache", "IdentityCache", "is_frozen"]

DEFAULT_SIZE = 256
"""Entries each cache keeps at most."""

MIN_CACHED_BYTES = 12
"""Shapes encoded in fewer bytes are not cached by :class:`DecodedShapeCache` (its lookup key is
this many bytes long; such shapes have one or two short-named fields and read quickly), except the
empty shape, whose encoding is the end-of-fields marker alone."""

_BUCKET_SIZE = 16  # cached encodings sharing their first MIN_CACHED_BYTES bytes
_EMPTY_SHAPE = DataShape(())

_FROZEN_TYPES = frozenset({str, int, float, bool, type(None), datetime, timedelta, bytes, Location})

T = TypeVar("T")


def _frozen_value(value: Any) -> bool:
    if type(value) is Variant:
        return _frozen_value(value.value)
    return type(value) in _FROZEN_TYPES


def is_frozen(shape: DataShape) -> bool:
    """True when every aspect value of every field of ``shape`` is immutable (see module rules)."""
    return all(_frozen_value(v) for f in shape.fields for v in f.aspects.values())


class IdentityCache(Generic[T]):
    """A bounded map from objects (by identity) to values computed from them.

    Args:
        size: the most entries kept; the oldest goes first.
    """

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self._size = size
        self._entries: dict[int, tuple[object, T]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, obj: object, compute: Callable[[Any], T]) -> T:
        """The value for ``obj``, computed by ``compute(obj)`` (and kept) on a miss.

        An exception from ``compute`` propagates and nothing is kept.
        """
        entry = self._entries.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1]
        value = compute(obj)
        with self._lock:
            entries = self._entries
            while len(entries) >= self._size:
                del entries[next(iter(entries))]
            entries[id(obj)] = (obj, value)
        return value

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()


class DecodedShapeCache:
    """A bounded map from the encoded field definitions of a shape to the decoded shape.

    Args:
        size: the most shapes kept; the oldest goes first.
    """

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self._size = size
        # The first MIN_CACHED_BYTES bytes of an encoding -> every cached (encoding, shape) with
        # that start. A bucket is a tuple, replaced whole, so readers never see it change.
        self._buckets: dict[bytes, tuple[tuple[bytes, DataShape], ...]] = {}
        self._count = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._count

    def lookup(self, buf: bytes, pos: int) -> tuple[DataShape, int] | None:
        """The cached shape whose encoding ``buf`` holds at ``pos``, and the position after it;
        None when no cached encoding is there."""
        key = buf[pos : pos + MIN_CACHED_BYTES]
        if key[:1] == b"\x00":
            return _EMPTY_SHAPE, pos + 1
        bucket = self._buckets.get(key)
        if bucket is not None:
            for encoded, shape in bucket:
                if buf.startswith(encoded, pos):
                    return shape, pos + len(encoded)
        return None

    def remember(self, encoded: bytes, shape: DataShape) -> None:
        """Keep ``shape`` as the decoding of ``encoded`` (if it is long enough and frozen)."""
        if len(encoded) < MIN_CACHED_BYTES or not is_frozen(shape):
            return
        key = encoded[:MIN_CACHED_BYTES]
        with self._lock:
            buckets = self._buckets
            bucket = buckets.pop(key, ())
            self._count -= len(bucket)
            if any(e == encoded for e, _ in bucket):
                buckets[key] = bucket
                self._count += len(bucket)
                return
            keep = min(_BUCKET_SIZE, self._size) - 1  # older encodings kept in this bucket
            if len(bucket) > keep:
                bucket = bucket[len(bucket) - keep :]
            while self._count + len(bucket) >= self._size and buckets:
                self._count -= len(buckets.pop(next(iter(buckets))))
            buckets[key] = (*bucket, (encoded, shape))
            self._count += len(bucket) + 1

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._buckets.clear()
            self._count = 0
