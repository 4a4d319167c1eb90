"""Moved to :mod:`services.store` (``rollouts``, ``sqlite``, ``postgres``): this name stays for
the branches of this round that still import it; import from :mod:`services.store` instead."""

from __future__ import annotations

from services.store.rollouts import (
    DeviceRecord,
    DeviceUpdate,
    PartRecord,
    RolloutRecord,
    RolloutStore,
    RoundRecord,
)
from services.store.sqlite import SqliteRolloutStore

__all__ = [
    "DeviceRecord",
    "DeviceUpdate",
    "PartRecord",
    "RolloutRecord",
    "RolloutStore",
    "RoundRecord",
    "SqliteRolloutStore",
]
