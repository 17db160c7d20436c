"""Where memory lives: threads, their turns, and per-user facts, in one SQLite file under the app home.

Every method takes the user first and touches only that user's rows: a thread id of
another user is refused (`ThreadRefused`), a fact id of another user is simply not there.
Facts carry their source (thread and turn) and are unique per user by their normalised
text, which is what makes consolidation idempotent. Vectors are in a sqlite-vec `vec0`
table partitioned by owner (user and namespace), keywords in a contentless FTS5 table, as
in the knowledge index (the same pysqlite3 + sqlite-vec connection, for the same reason:
this Python's sqlite3 cannot load extensions).

With FOREMAN_DATABASE_URL set, `open_memory` gives `PgMemoryStore` instead: the same methods and
the same per-user scoping on PostgreSQL (tsvector keywords, pgvector or portable vectors).

Unlike the knowledge index, memory is not derived data: a damaged file is never moved
aside or rebuilt here. It raises `StateFileError` naming the file, and nothing else is
touched.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pysqlite3.dbapi2 as sqlite3
import sqlite_vec

from foreman.db import PgDatabase, database
from foreman.errors import StateFileError, ThreadRefused, UnknownThread
from foreman.pg_vectors import prepare_store
from foreman.settings import Settings
from foreman.sqlite import SqliteStore, is_damage
from foreman.tools.knowledge.store import fts_query, ts_query
from foreman.tools.memory.records import Fact, Forgotten, Hit, Role, ThreadInfo, TurnRecord

__all__ = ["FACTS", "Fact", "Forgotten", "MemoryStore", "PgMemoryStore", "Role", "ThreadInfo", "TurnRecord",
           "normalize", "open_memory"]

SCHEMA_VERSION = "1"
FACTS = "facts"  # the namespace of the memory tools; `cf.Memory(key=K)` uses "cf:K"
THREAD_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS threads (
    id TEXT PRIMARY KEY, user TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
    summary TEXT NOT NULL DEFAULT '', summarized_upto INTEGER NOT NULL DEFAULT 0,
    consolidated_upto INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS threads_user ON threads (user);
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT, thread TEXT NOT NULL, user TEXT NOT NULL, ordinal INTEGER NOT NULL,
    role TEXT NOT NULL, content TEXT NOT NULL, tokens INTEGER NOT NULL, at REAL NOT NULL, run_id TEXT,
    UNIQUE (thread, ordinal)
);
CREATE INDEX IF NOT EXISTS turns_user ON turns (user);
CREATE TABLE IF NOT EXISTS facts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, namespace TEXT NOT NULL, content TEXT NOT NULL,
    normalized TEXT NOT NULL, source_thread TEXT, source_turn INTEGER, created REAL NOT NULL,
    UNIQUE (user, namespace, normalized)
);
CREATE VIRTUAL TABLE IF NOT EXISTS fact_fts USING fts5(
    body, content='', contentless_delete=1, tokenize='porter unicode61'
);
"""


def normalize(text: str) -> str:
    """The identity of a fact: lower case, words only, so re-wording whitespace or case is the same fact."""
    return " ".join(re.findall(r"\w+", text.lower()))


def new_thread_id() -> str:
    return time.strftime("%Y%m%d-") + secrets.token_hex(3)


def _owner(user: str, namespace: str) -> str:
    return f"{user}\x1f{namespace}"


class MemoryStore(SqliteStore):
    """Threads, turns and facts of every user; each method works on one user's rows only."""

    SCHEMA = SCHEMA

    def __init__(self, path: Path, dim: int) -> None:
        self.dim = dim
        super().__init__(path)
        with self._connect() as db:
            stored = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if not stored:
                db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                               [("schema", SCHEMA_VERSION), ("dim", str(dim))])
            elif stored.get("schema") != SCHEMA_VERSION or stored.get("dim") != str(dim):
                raise StateFileError(self.path, f"a memory file of schema {stored.get('schema')} with "
                                     f"{stored.get('dim')}-dimensional vectors, not schema {SCHEMA_VERSION} with {dim}")
            db.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS fact_vec USING vec0("
                       f"fact_id INTEGER PRIMARY KEY, owner TEXT partition key, "
                       f"embedding float[{dim}] distance_metric=cosine)")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:  # type: ignore[override]
        try:
            db = sqlite3.connect(str(self.path), timeout=30)
        except sqlite3.DatabaseError as exc:
            raise StateFileError(self.path, f"cannot be opened (sqlite says: {exc})") from None
        try:
            db.enable_load_extension(True)
            sqlite_vec.load(db)
            db.enable_load_extension(False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA secure_delete=ON")  # what is forgotten is overwritten, not left in free pages
            db.row_factory = sqlite3.Row
            with db:
                yield db
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise StateFileError(self.path, f"the memory database is damaged or not SQLite (sqlite says: {exc})"
                                     ) from None
            raise
        finally:
            db.close()

    # --- threads ---------------------------------------------------------------------

    def _owned(self, db: sqlite3.Connection, user: str, thread: str) -> sqlite3.Row:
        row = db.execute("SELECT * FROM threads WHERE id = ?", (thread,)).fetchone()
        if row is None:
            known = [r[0] for r in db.execute("SELECT id FROM threads WHERE user = ? ORDER BY updated DESC LIMIT 10",
                                              (user,))]
            raise UnknownThread(thread, user, known)
        if row["user"] != user:
            raise ThreadRefused(thread, user)
        return row

    def create_thread(self, user: str, thread: str | None = None) -> ThreadInfo:
        """A new thread for `user`; a given id must be free (another user's id is refused)."""
        thread = thread or new_thread_id()
        if not THREAD_PATTERN.match(thread):
            raise UnknownThread(thread, user, [], reason="is not a usable thread id (letters, digits, '_.-', "
                                                         "at most 64)")
        now = time.time()
        with self._connect() as db:
            row = db.execute("SELECT user FROM threads WHERE id = ?", (thread,)).fetchone()
            if row is not None and row["user"] != user:
                raise ThreadRefused(thread, user)
            db.execute("INSERT OR IGNORE INTO threads (id, user, created, updated) VALUES (?, ?, ?, ?)",
                       (thread, user, now, now))
        return self.thread(user, thread)

    def thread(self, user: str, thread: str) -> ThreadInfo:
        """`user`'s thread, or `UnknownThread` / `ThreadRefused`."""
        with self._connect() as db:
            row = self._owned(db, user, thread)
            count = db.execute("SELECT COUNT(*) FROM turns WHERE thread = ?", (thread,)).fetchone()[0]
        return ThreadInfo(**dict(row), turns=count)

    def threads(self, user: str) -> list[ThreadInfo]:
        with self._connect() as db:
            rows = db.execute("SELECT t.*, (SELECT COUNT(*) FROM turns WHERE thread = t.id) AS turns"
                              " FROM threads t WHERE user = ? ORDER BY updated DESC", (user,)).fetchall()
        return [ThreadInfo(**dict(r)) for r in rows]

    def add_turn(self, user: str, thread: str, role: Role, content: str, tokens: int,
                 run_id: str | None = None) -> TurnRecord:
        now = time.time()
        with self._connect() as db:
            self._owned(db, user, thread)
            ordinal = db.execute("SELECT COALESCE(MAX(ordinal), 0) + 1 FROM turns WHERE thread = ?",
                                 (thread,)).fetchone()[0]
            cursor = db.execute("INSERT INTO turns (thread, user, ordinal, role, content, tokens, at, run_id)"
                                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                (thread, user, ordinal, role, content, tokens, now, run_id))
            db.execute("UPDATE threads SET updated = ? WHERE id = ?", (now, thread))
        return TurnRecord(id=cursor.lastrowid, thread=thread, user=user, ordinal=ordinal, role=role,
                          content=content, tokens=tokens, at=now, run_id=run_id)

    def turns(self, user: str, thread: str, after: int = 0) -> list[TurnRecord]:
        """The thread's turns with ordinal > `after`, oldest first."""
        with self._connect() as db:
            self._owned(db, user, thread)
            rows = db.execute("SELECT * FROM turns WHERE thread = ? AND ordinal > ? ORDER BY ordinal",
                              (thread, after)).fetchall()
        return [TurnRecord(**dict(r)) for r in rows]

    def set_summary(self, user: str, thread: str, summary: str, upto: int) -> None:
        with self._connect() as db:
            self._owned(db, user, thread)
            db.execute("UPDATE threads SET summary = ?, summarized_upto = ? WHERE id = ?", (summary, upto, thread))

    def set_consolidated(self, user: str, thread: str, upto: int) -> None:
        with self._connect() as db:
            self._owned(db, user, thread)
            db.execute("UPDATE threads SET consolidated_upto = MAX(consolidated_upto, ?) WHERE id = ?",
                       (upto, thread))

    def delete_thread(self, user: str, thread: str) -> Forgotten:
        with self._connect() as db:
            self._owned(db, user, thread)
            turns = db.execute("DELETE FROM turns WHERE thread = ?", (thread,)).rowcount
            db.execute("DELETE FROM threads WHERE id = ?", (thread,))
        return Forgotten(threads=1, turns=turns)

    # --- facts -----------------------------------------------------------------------

    def add_fact(self, user: str, content: str, vector: np.ndarray, *, namespace: str = FACTS,
                 source_thread: str | None = None, source_turn: int | None = None) -> tuple[Fact, bool]:
        """Store a fact (and its vector and keywords) unless `user` already has it; (fact, created)."""
        key = normalize(content)
        with self._connect() as db:
            row = db.execute("SELECT * FROM facts WHERE user = ? AND namespace = ? AND normalized = ?",
                             (user, namespace, key)).fetchone()
            if row is not None:
                return _fact(row), False
            cursor = db.execute(
                "INSERT INTO facts (user, namespace, content, normalized, source_thread, source_turn, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)", (user, namespace, content, key, source_thread, source_turn,
                                                  time.time()))
            fact_id = cursor.lastrowid
            db.execute("INSERT INTO fact_fts (rowid, body) VALUES (?, ?)", (fact_id, content))
            db.execute("INSERT INTO fact_vec (fact_id, owner, embedding) VALUES (?, ?, ?)",
                       (fact_id, _owner(user, namespace), np.asarray(vector, dtype=np.float32).tobytes()))
            row = db.execute("SELECT * FROM facts WHERE id = ?", (fact_id,)).fetchone()
        return _fact(row), True

    def facts(self, user: str, namespace: str | None = None) -> list[Fact]:
        with self._connect() as db:
            if namespace is None:
                rows = db.execute("SELECT * FROM facts WHERE user = ? ORDER BY id", (user,))
            else:
                rows = db.execute("SELECT * FROM facts WHERE user = ? AND namespace = ? ORDER BY id",
                                  (user, namespace))
            return [_fact(r) for r in rows.fetchall()]

    def facts_by_id(self, user: str, ids: list[int]) -> dict[int, Fact]:
        if not ids:
            return {}
        with self._connect() as db:
            rows = db.execute(f"SELECT * FROM facts WHERE user = ? AND id IN ({','.join('?' * len(ids))})",
                              (user, *ids)).fetchall()
        return {r["id"]: _fact(r) for r in rows}

    def delete_fact(self, user: str, fact_id: int, namespace: str | None = None) -> bool:
        """Delete `user`'s fact `fact_id` with its vector and keywords; False when `user` has none such."""
        with self._connect() as db:
            row = db.execute("SELECT namespace FROM facts WHERE id = ? AND user = ?", (fact_id, user)).fetchone()
            if row is None or (namespace is not None and row["namespace"] != namespace):
                return False
            self._delete_facts(db, [fact_id])
        return True

    def _delete_facts(self, db: sqlite3.Connection, ids: list[int]) -> int:
        vectors = 0
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            marks = ",".join("?" * len(part))
            vectors += db.execute(f"DELETE FROM fact_vec WHERE fact_id IN ({marks})", part).rowcount
            db.execute(f"DELETE FROM fact_fts WHERE rowid IN ({marks})", part)
            db.execute(f"DELETE FROM facts WHERE id IN ({marks})", part)
        return vectors

    def vector_search(self, user: str, namespace: str, vector: np.ndarray, k: int) -> list[Hit]:
        with self._connect() as db:
            rows = db.execute("SELECT fact_id, distance FROM fact_vec WHERE embedding MATCH ? AND k = ?"
                              " AND owner = ? ORDER BY distance",
                              (np.asarray(vector, dtype=np.float32).tobytes(), k, _owner(user, namespace))).fetchall()
        return [Hit(r[0], 1.0 - float(r[1])) for r in rows]

    def keyword_search(self, user: str, namespace: str, query: str, k: int) -> list[Hit]:
        expression = fts_query(query)
        if expression is None:
            return []
        with self._connect() as db:
            rows = db.execute("SELECT fact_fts.rowid, bm25(fact_fts) AS rank FROM fact_fts"
                              " CROSS JOIN facts ON facts.id = fact_fts.rowid"
                              " WHERE fact_fts MATCH ? AND facts.user = ? AND facts.namespace = ?"
                              " ORDER BY rank LIMIT ?", (expression, user, namespace, k)).fetchall()
        return [Hit(r[0], -float(r[1])) for r in rows]

    # --- people ----------------------------------------------------------------------

    def users(self) -> list[dict[str, int | str]]:
        """Every user with something remembered: name, threads, turns, facts."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT user, SUM(threads) AS threads, SUM(turns) AS turns, SUM(facts) AS facts FROM ("
                " SELECT user, COUNT(*) AS threads, 0 AS turns, 0 AS facts FROM threads GROUP BY user UNION ALL"
                " SELECT user, 0, COUNT(*), 0 FROM turns GROUP BY user UNION ALL"
                " SELECT user, 0, 0, COUNT(*) FROM facts GROUP BY user) GROUP BY user ORDER BY user").fetchall()
        return [dict(r) for r in rows]

    def forget_user(self, user: str) -> Forgotten:
        """Delete every thread, turn, fact, keyword entry and embedding of `user`, in one transaction."""
        with self._connect() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM facts WHERE user = ?", (user,))]
            vectors = self._delete_facts(db, ids)
            turns = db.execute("DELETE FROM turns WHERE user = ?", (user,)).rowcount
            threads = db.execute("DELETE FROM threads WHERE user = ?", (user,)).rowcount
        self.scrub()
        return Forgotten(threads=threads, turns=turns, facts=len(ids), vectors=vectors)

    def scrub(self) -> None:
        """Leave no trace of deleted rows in the file: merge the keyword index (a contentless FTS5
        table keeps deleted terms until its segments merge), drop empty vector chunks, and
        checkpoint the WAL (which holds old page images) into the zeroed main file."""
        with self._connect() as db:
            db.execute("INSERT INTO fact_fts (fact_fts) VALUES ('optimize')")
        with self._connect() as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _fact(row: sqlite3.Row) -> Fact:
    data = dict(row)
    data.pop("normalized", None)
    return Fact(**data)


# --- PostgreSQL ------------------------------------------------------------------------

PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS threads (
    id TEXT PRIMARY KEY, user TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL,
    summary TEXT NOT NULL DEFAULT '', summarized_upto INTEGER NOT NULL DEFAULT 0,
    consolidated_upto INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS threads_user ON threads (user);
CREATE TABLE IF NOT EXISTS turns (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, thread TEXT NOT NULL, user TEXT NOT NULL,
    ordinal INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL, tokens INTEGER NOT NULL,
    at DOUBLE PRECISION NOT NULL, run_id TEXT, UNIQUE (thread, ordinal)
);
CREATE INDEX IF NOT EXISTS turns_user ON turns (user);
CREATE TABLE IF NOT EXISTS facts (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, user TEXT NOT NULL, namespace TEXT NOT NULL,
    content TEXT NOT NULL, normalized TEXT NOT NULL, source_thread TEXT, source_turn INTEGER,
    created DOUBLE PRECISION NOT NULL, UNIQUE (user, namespace, normalized)
);
CREATE TABLE IF NOT EXISTS fact_terms (
    fact_id BIGINT PRIMARY KEY REFERENCES facts (id) ON DELETE CASCADE, terms tsvector NOT NULL
);
CREATE INDEX IF NOT EXISTS fact_terms_gin ON fact_terms USING gin (terms)
"""


class PgMemoryStore(MemoryStore):
    """Memory in PostgreSQL (schema `foreman_memory`), every method still scoped to one user.

    Keywords are a `tsvector` per fact ranked by `ts_rank` (English stemming, as FTS5's porter),
    vectors pgvector's or the portable column (`foreman.pg_vectors`); both tables cascade from
    `facts`, so a deleted fact takes its keywords and embedding with it. `scrub` VACUUMs the
    tables so forgotten rows do not linger as dead tuples (PostgreSQL's WAL and backups are the
    operator's to manage, as SQLite's file copies are)."""

    def __init__(self, db: PgDatabase, dim: int) -> None:
        self.db, self.dim = db, dim
        self.path = db.where  # type: ignore[assignment]

        def mismatch(schema: str | None, stored_dim: str | None) -> str:
            return (f"{db.where} holds memory of schema {schema} with {stored_dim}-dimensional vectors, not "
                    f"schema {SCHEMA_VERSION} with {dim}; memory is not derived data, so nothing was changed: "
                    "point FOREMAN_DATABASE_URL at another database, or move the schema aside "
                    f"(ALTER SCHEMA {db.schema} RENAME TO {db.schema}_old)")

        self.vectors = prepare_store(db, dim, schema_sql=PG_SCHEMA, version=SCHEMA_VERSION, name="memory",
                                     vector_tables=lambda column_type: [
            (f"CREATE TABLE IF NOT EXISTS fact_vectors (fact_id BIGINT PRIMARY KEY REFERENCES facts (id)"
            f" ON DELETE CASCADE, owner TEXT NOT NULL, embedding {column_type} NOT NULL)"),
            "CREATE INDEX IF NOT EXISTS fact_vectors_owner ON fact_vectors (owner)"], mismatch=mismatch)

    def _connect(self):  # type: ignore[override]
        return self.db.connect()

    def create_thread(self, user: str, thread: str | None = None) -> ThreadInfo:
        thread = thread or new_thread_id()
        if not THREAD_PATTERN.match(thread):
            raise UnknownThread(thread, user, [], reason="is not a usable thread id (letters, digits, '_.-', "
                                                         "at most 64)")
        now = time.time()
        with self._connect() as db:
            db.execute("INSERT INTO threads (id, user, created, updated) VALUES (?, ?, ?, ?)"
                       " ON CONFLICT (id) DO NOTHING", (thread, user, now, now))
            row = db.execute("SELECT user FROM threads WHERE id = ?", (thread,)).fetchone()
            if row["user"] != user:
                raise ThreadRefused(thread, user)
        return self.thread(user, thread)

    def add_turn(self, user: str, thread: str, role: Role, content: str, tokens: int,
                 run_id: str | None = None) -> TurnRecord:
        now = time.time()
        with self._connect() as db:
            self._owned(db, user, thread)
            db.execute("SELECT 1 FROM threads WHERE id = ? FOR UPDATE", (thread,))  # one ordinal at a time
            ordinal = db.execute("SELECT COALESCE(MAX(ordinal), 0) + 1 FROM turns WHERE thread = ?",
                                 (thread,)).fetchone()[0]
            turn_id = db.execute("INSERT INTO turns (thread, user, ordinal, role, content, tokens, at, run_id)"
                                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                                 (thread, user, ordinal, role, content, tokens, now, run_id)).fetchone()[0]
            db.execute("UPDATE threads SET updated = ? WHERE id = ?", (now, thread))
        return TurnRecord(id=turn_id, thread=thread, user=user, ordinal=ordinal, role=role,
                          content=content, tokens=tokens, at=now, run_id=run_id)

    def set_consolidated(self, user: str, thread: str, upto: int) -> None:
        with self._connect() as db:
            self._owned(db, user, thread)
            db.execute("UPDATE threads SET consolidated_upto = GREATEST(consolidated_upto, ?) WHERE id = ?",
                       (upto, thread))

    def add_fact(self, user: str, content: str, vector: np.ndarray, *, namespace: str = FACTS,
                 source_thread: str | None = None, source_turn: int | None = None) -> tuple[Fact, bool]:
        key = normalize(content)
        with self._connect() as db:
            row = db.execute(
                "INSERT INTO facts (user, namespace, content, normalized, source_thread, source_turn, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user, namespace, normalized) DO NOTHING RETURNING *",
                (user, namespace, content, key, source_thread, source_turn, time.time())).fetchone()
            if row is None:  # the user has it already (perhaps written by another process just now)
                row = db.execute("SELECT * FROM facts WHERE user = ? AND namespace = ? AND normalized = ?",
                                 (user, namespace, key)).fetchone()
                return _fact(row), False
            db.execute("INSERT INTO fact_terms (fact_id, terms) VALUES (?, to_tsvector('english', ?))",
                       (row["id"], content))
            db.execute(f"INSERT INTO fact_vectors (fact_id, owner, embedding) VALUES (?, ?, {self.vectors.placeholder})",
                       (row["id"], _owner(user, namespace), self.vectors.encode(vector)))
        return _fact(row), True

    def _delete_facts(self, db, ids: list[int]) -> int:  # type: ignore[override]
        if not ids:
            return 0
        vectors = db.execute("SELECT COUNT(*) FROM fact_vectors WHERE fact_id = ANY(?)", (ids,)).fetchone()[0]
        db.execute("DELETE FROM facts WHERE id = ANY(?)", (ids,))  # keywords and vectors cascade
        return int(vectors)

    def vector_search(self, user: str, namespace: str, vector: np.ndarray, k: int) -> list[Hit]:
        with self._connect() as db:
            found = self.vectors.nearest(db, "fact_vectors", "fact_id", "owner = ?", (_owner(user, namespace),),
                                         vector, k)
        return [Hit(i, s) for i, s in found]

    def keyword_search(self, user: str, namespace: str, query: str, k: int) -> list[Hit]:
        expression = ts_query(query)
        if expression is None:
            return []
        with self._connect() as db:
            rows = db.execute("SELECT f.id, ts_rank(t.terms, q) AS rank FROM fact_terms t"
                              " JOIN facts f ON f.id = t.fact_id, to_tsquery('english', ?) q"
                              " WHERE t.terms @@ q AND f.user = ? AND f.namespace = ?"
                              " ORDER BY rank DESC, f.id LIMIT ?", (expression, user, namespace, k)).fetchall()
        return [Hit(r[0], float(r[1])) for r in rows]

    def users(self) -> list[dict[str, int | str]]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT user, SUM(threads)::bigint AS threads, SUM(turns)::bigint AS turns,"
                " SUM(facts)::bigint AS facts FROM ("
                " SELECT user, COUNT(*) AS threads, 0 AS turns, 0 AS facts FROM threads GROUP BY user UNION ALL"
                " SELECT user, 0, COUNT(*), 0 FROM turns GROUP BY user UNION ALL"
                " SELECT user, 0, 0, COUNT(*) FROM facts GROUP BY user) AS counts GROUP BY user ORDER BY user"
            ).fetchall()
        return [dict(r) for r in rows]

    def scrub(self) -> None:
        """VACUUM the memory tables, so forgotten rows' dead tuples are reclaimed now."""
        for table in ("fact_vectors", "fact_terms", "facts", "turns", "threads"):
            self.db.outside_transaction(f"VACUUM {table}")


def open_memory(settings: Settings, dim: int) -> MemoryStore:
    """The app's memory: FOREMAN_DATABASE_URL's PostgreSQL when set, else memory.sqlite3 under the home."""
    pg = database("foreman_memory", settings.database_url, reserved=("user",))
    return PgMemoryStore(pg, dim) if pg is not None else MemoryStore(settings.memory_db, dim)
