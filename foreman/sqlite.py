"""The small SQLite stores Foreman keeps under its home (audit log, run store).

One connection per operation, WAL journal, a 30 s busy timeout: concurrent steps (threads)
and concurrent runs (processes) can write without sharing a connection.

A damaged file (not SQLite at all, or a corrupt page) raises `StateFileError` naming the
file and what to do, on whichever operation first meets the damage; SQLite's own "file is
not a database" names neither. Other SQLite errors (a locked file, a bug in a query) keep
their own type: moving the file aside would not fix them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from foreman.errors import StateFileError

DAMAGE = ("SQLITE_NOTADB", "SQLITE_CORRUPT")  # error names (and their extended forms) that mean a damaged file


def is_damage(error: sqlite3.Error) -> bool:
    """Whether SQLite refused the file itself rather than one operation on it."""
    return str(getattr(error, "sqlite_errorname", "")).startswith(DAMAGE)


class SqliteStore:
    """Base for a store with a schema; subclasses set `SCHEMA`."""

    SCHEMA = ""
    # Columns added after a table first shipped: (table, column, declaration). Older files get them.
    ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = ()

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(self.SCHEMA)
            for table, column, declaration in self.ADDED_COLUMNS:
                present = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
                if column not in present:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            _wal(db)
            db.row_factory = sqlite3.Row
            with db:
                yield db
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise StateFileError(self.path, f"damaged or not a SQLite database (sqlite says: {exc})") from None
            raise
        finally:
            db.close()


def _wal(db: sqlite3.Connection) -> None:
    """WAL mode, once per file (it persists). Switching takes a lock the busy timeout does not wait
    for, so processes opening a new file at once (Dask workers) retry briefly instead of failing."""
    import time

    for attempt in range(50):
        try:
            if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 49:
                raise
            time.sleep(0.1)
