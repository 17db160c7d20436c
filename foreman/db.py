"""Where Foreman's own stores live: SQLite files under the home (default) or one PostgreSQL database.

One setting decides it, `FOREMAN_DATABASE_URL`: unset, every store (run store, audit log,
memory, knowledge) is its own SQLite file under FOREMAN_HOME, as before; `postgresql://…`,
all of them live in that one database, each in its own schema (`foreman_runs`,
`foreman_audit`, `foreman_memory`, `foreman_knowledge`). With several workers on several
machines the results and the audit trail must be in one place every process reaches; a
SQLite file under one machine's home is not.

The stores keep their SQL close to SQLite's: `PgConnection.execute` takes `?` placeholders
and returns rows that, like `sqlite3.Row`, are read by name or by position, so a PostgreSQL
store overrides only the statements whose dialect differs.

Connections are kept one per thread and process (a worker's threads and Dask's processes
each get their own; a forked child never reuses its parent's socket), opened in autocommit
mode, each operation in its own transaction, as with SQLite's one connection per operation.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

from foreman.errors import ConfigurationError, PostgresUnavailable

Backend = Literal["sqlite", "postgres"]
SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+asyncpg", "postgresql+psycopg2")
SETTING = "FOREMAN_DATABASE_URL"
CONNECT_TIMEOUT_S = 10
_HINT = (f"set {SETTING} to postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE, "
         "or unset it to keep Foreman's stores in SQLite files under FOREMAN_HOME")


def backend(url: str | None) -> Backend:
    """Which backend a FOREMAN_DATABASE_URL value picks (a bad value is a `ConfigurationError`)."""
    if url is None or not url.strip():
        return "sqlite"
    normalize(url)
    return "postgres"


def normalize(url: str) -> str:
    """The libpq URL for `url`: SQLAlchemy-style driver suffixes (`postgresql+asyncpg://`, as in
    PREFECT_API_DATABASE_CONNECTION_URL) are accepted, so one URL can serve both settings."""
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ConfigurationError(f"{SETTING}={redact(text)!r} is not a PostgreSQL URL; {_HINT}")
    from psycopg.conninfo import conninfo_to_dict

    plain = "postgresql://" + rest
    try:
        conninfo_to_dict(plain)
    except Exception as exc:  # noqa: BLE001  (psycopg raises ProgrammingError or ValueError)
        raise ConfigurationError(f"{SETTING}={redact(text)!r} cannot be parsed ({redact(str(exc))}); {_HINT}") from None
    return plain


def redact(url: str) -> str:
    """`url` with any password replaced by `***`, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


# --- rows and connections -------------------------------------------------------------


class Row(dict):
    """A result row read by column name or by position and unpacked by position, like `sqlite3.Row`
    (and `dict(row)`, `**row` give the names)."""

    __slots__ = ("_values",)

    def __init__(self, names: Sequence[str], values: Sequence[Any]) -> None:
        super().__init__(zip(names, values, strict=True))
        self._values = tuple(values)

    def __getitem__(self, key: Any) -> Any:
        return self._values[key] if isinstance(key, int) else super().__getitem__(key)

    def __iter__(self) -> Iterator[Any]:
        """The values, as `sqlite3.Row` iterates (`files, chunks = row`); `dict(row)` still reads names."""
        return iter(self._values)


def _row_factory(cursor: Any) -> Any:
    names = [c.name for c in cursor.description or ()]
    return lambda values: Row(names, values)


def _placeholders(sql: str) -> str:
    """SQLite's `?` placeholders as psycopg's `%s` (a literal `%` doubled first)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """A psycopg connection that speaks the stores' SQLite-style SQL (`?`, rows by name or position).

    `reserved` are column names SQLite allows bare and PostgreSQL reserves (memory's `user`):
    they are quoted wherever they appear as a word, so the store's SQL keeps its names."""

    def __init__(self, raw: Any, reserved: re.Pattern[str] | None = None) -> None:
        self.raw = raw
        self.reserved = reserved

    def sql(self, sql: str) -> str:
        """`sql` as psycopg takes it (placeholders, reserved names quoted)."""
        sql = _placeholders(sql)
        return self.reserved.sub(r'"\1"', sql) if self.reserved else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.raw.execute(self.sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        cursor = self.raw.cursor()
        cursor.executemany(self.sql(sql), [tuple(r) for r in rows])
        return cursor


class PgDatabase:
    """One schema of the PostgreSQL database FOREMAN_DATABASE_URL names.

    `connect()` yields a `PgConnection` inside one transaction on this thread's connection;
    `ensure(ddl)` creates the schema's tables once per process, serialised across processes
    by an advisory lock (two workers starting at once would otherwise race on CREATE)."""

    _local = threading.local()
    _ensured: ClassVar[set[tuple[int, str, str]]] = set()
    _ensure_lock = threading.Lock()

    def __init__(self, url: str, schema: str, reserved: Sequence[str] = ()) -> None:
        self.url = normalize(url)
        self.schema = schema
        words = "|".join(map(re.escape, reserved))
        self.reserved = re.compile(rf'(?<!")\b({words})\b(?!")') if reserved else None
        self.where = f"{redact(self.url)} (schema {schema})"

    def __repr__(self) -> str:
        return f"PgDatabase({self.where})"

    def _open(self) -> Any:
        import psycopg

        try:
            raw = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                  row_factory=_row_factory, options=f"-c search_path={self.schema},public")
        except psycopg.OperationalError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PostgresUnavailable(
                f"cannot reach PostgreSQL at {redact(self.url)} ({SETTING}): {reason}. Start the server or "
                f"fix {SETTING}, or unset it to keep Foreman's stores in SQLite files under FOREMAN_HOME"
            ) from None
        return raw

    def _connection(self) -> Any:
        pool: dict[tuple[int, str, str], Any] = self._local.__dict__.setdefault("pool", {})
        key = (os.getpid(), self.url, self.schema)
        raw = pool.get(key)
        if raw is None or raw.closed or raw.broken:
            raw = pool[key] = self._open()
        return raw

    @contextmanager
    def connect(self) -> Iterator[PgConnection]:
        import psycopg

        raw = self._connection()
        try:
            with raw.transaction():
                yield PgConnection(raw, self.reserved)
        except psycopg.OperationalError as exc:
            if raw.broken or raw.closed:  # the server went away: the next operation reconnects
                self._local.pool.pop((os.getpid(), self.url, self.schema), None)
                raise PostgresUnavailable(f"lost the connection to PostgreSQL at {self.where}: "
                                          f"{str(exc).strip() or type(exc).__name__}") from None
            raise

    def ensure(self, ddl: str) -> None:
        """Create the schema and run `ddl` (idempotent statements) once per process."""
        key = (os.getpid(), self.url, self.schema)
        with self._ensure_lock:
            if key in self._ensured:
                return
            with self.connect() as db:
                db.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (f"foreman:{self.schema}",))
                db.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                for statement in _statements(ddl):
                    db.execute(statement)
            self._ensured.add(key)

    def outside_transaction(self, sql: str) -> None:
        """Run one statement that may not run in a transaction (VACUUM)."""
        self._connection().execute(sql)

    def has_extension(self, name: str) -> bool:
        """Whether `CREATE EXTENSION name` can work here (the server has its files)."""
        with self.connect() as db:
            row = db.execute("SELECT 1 FROM pg_available_extensions WHERE name = ?", (name,)).fetchone()
        return row is not None


def _statements(ddl: str) -> list[str]:
    return [s.strip() for s in ddl.split(";") if s.strip()]


def database(schema: str, url: str | None, reserved: Sequence[str] = ()) -> PgDatabase | None:
    """The PostgreSQL schema for a store when `url` (a FOREMAN_DATABASE_URL value) is set; else None."""
    return PgDatabase(url, schema, reserved) if url is not None and backend(url) == "postgres" else None


def app_database(schema: str) -> PgDatabase | None:
    """`database(schema, …)` for the current settings' FOREMAN_DATABASE_URL."""
    from foreman.settings import get_settings

    return database(schema, get_settings().database_url)
