"""The emulator's SQLite database: one file in the data directory, in WAL mode.

Rules: one connection, used only from the event loop's thread. Each part of the emulator owns its
own tables and creates them itself (``CREATE TABLE IF NOT EXISTS``); nothing reads another part's
tables. Writes that must survive a SIGKILL are committed before the caller answers anyone, and
bulk writes go through :meth:`Database.transaction` so that 100,000 rows are one commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["Database"]


class Database:
    """A SQLite connection in WAL mode with a transaction helper."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path) if str(path) != ":memory:" else None
        self.connection = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.connection.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process kill (only a power loss can lose the last commit).
        self.connection.execute("PRAGMA synchronous=NORMAL")
        self.connection.execute("PRAGMA foreign_keys=ON")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run a block in one transaction: committed on success, rolled back on error."""
        conn = self.connection
        conn.execute("BEGIN")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        self.connection.close()
