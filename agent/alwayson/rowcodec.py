"""Fast row codecs compiled once per DataShape (reference §4).

Placeholder: delegates to the checked path of :mod:`agent.alwayson.valuecodec` until the
compiled codecs land.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.alwayson.infotable import DataShape

__all__ = ["RowCodec", "row_codec"]


@dataclass(frozen=True)
class RowCodec:
    """Row reader and writer for one DataShape."""

    shape: DataShape

    def write_rows(self, out: bytearray, rows: list[dict[str, Any]]) -> None:
        """Append rows and the end-of-rows marker."""
        from agent.alwayson.infotable import InfoTable
        from agent.alwayson.valuecodec import write_rows_checked

        write_rows_checked(out, InfoTable(self.shape, rows))

    def read_rows(self, buf: bytes, pos: int, depth: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Read rows up to and including the end-of-rows marker."""
        from agent.alwayson.valuecodec import read_rows_checked

        return read_rows_checked(buf, pos, self.shape, depth)


def row_codec(shape: DataShape) -> RowCodec:
    """The row codec of ``shape``."""
    return RowCodec(shape)
