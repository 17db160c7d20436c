"""Where passages live: the `KnowledgeStore` interface and its SQLite implementation.

The interface is what ingest and search need and nothing more (bases, per-file state,
replace a file's passages atomically, nearest vectors, keyword hits), so a pgvector
store is one more class. `SqliteKnowledgeStore` keeps everything in one file under the
app home: passages and file state in plain tables, vectors in a sqlite-vec `vec0`
table partitioned by knowledge base (cosine distance), keywords in a contentless FTS5
table (porter stemming, BM25). The stdlib sqlite3 of this Python cannot load extensions,
so connections come from pysqlite3 (its own, newer SQLite).

`PgKnowledgeStore` is the same interface on PostgreSQL (FOREMAN_DATABASE_URL; `open_knowledge`
picks): tsvector keywords ranked by `ts_rank` (title weighted over body, as the BM25 weights),
vectors in pgvector when the server has it, else ranked exactly in numpy (`foreman.pg_vectors`).

A damaged file is never patched: it is derived data, so `open_store` moves it aside and
starts a new one, saying so (`Opened.rebuilt`); the folders are indexed again by the
next ingest. Other SQLite errors (a locked file) keep their own type.
"""

from __future__ import annotations

import fcntl
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import pysqlite3.dbapi2 as sqlite3
import sqlite_vec
from pydantic import BaseModel

from foreman.db import PgDatabase, database
from foreman.errors import StateFileError
from foreman.pg_vectors import prepare_store
from foreman.settings import Settings
from foreman.sqlite import SqliteStore, is_damage
from foreman.tools.knowledge.chunking import Chunk
from foreman.tools.text import STOP_WORDS

SCHEMA_VERSION = "1"
BM25_WEIGHTS = (2.0, 1.0)  # title (path + heading), body


class BaseInfo(BaseModel):
    """One knowledge base: the folder it indexes, the model its vectors come from, its size."""

    name: str
    root: str
    model: str
    files: int = 0
    chunks: int = 0
    created: float = 0.0
    ingested: float | None = None


class FileState(BaseModel):
    """What the index knows of one file: enough to tell whether it changed."""

    path: str
    fingerprint: str  # chunker version + sha256 of the content
    size: int
    chunks: int
    kind: str


class StoredChunk(Chunk):
    id: int
    base: str


class Hit(NamedTuple):
    chunk_id: int
    score: float  # higher is better: cosine similarity, or -bm25


class KnowledgeStore(Protocol):
    """What ingest and search need from wherever passages are kept."""

    dim: int

    def bases(self) -> list[BaseInfo]: ...
    def base(self, name: str) -> BaseInfo | None: ...
    def create_base(self, name: str, root: str, model: str) -> BaseInfo: ...
    def reset_base(self, name: str, model: str) -> None: ...
    def drop_base(self, name: str) -> bool: ...
    def files(self, name: str) -> dict[str, FileState]: ...
    def put_file(self, name: str, state: FileState, chunks: Sequence[Chunk], vectors: np.ndarray) -> None: ...
    def remove_files(self, name: str, paths: Sequence[str]) -> None: ...
    def finish_ingest(self, name: str) -> BaseInfo: ...
    def vector_search(self, name: str, vector: np.ndarray, k: int) -> list[Hit]: ...
    def keyword_search(self, name: str, query: str, k: int) -> list[Hit]: ...
    def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]: ...


def _query_words(text: str) -> list[str]:
    words = [w for w in re.findall(r"\w+", text.lower()) if w not in STOP_WORDS and (len(w) > 1 or w.isdigit())]
    return list(dict.fromkeys(words))


def fts_query(text: str) -> str | None:
    """An FTS5 expression for free text: its words (no stop words), each quoted, OR-ed; None if none."""
    words = _query_words(text)
    return " OR ".join(f'"{w}"' for w in words) if words else None


def ts_query(text: str) -> str | None:
    """The same words as a PostgreSQL `to_tsquery` expression (`w1 | w2`), each quoted as a lexeme."""
    words = [w.replace("'", "") for w in _query_words(text)]
    return " | ".join(f"'{w}'" for w in words if w) or None


def title_of(chunk: Chunk) -> str:
    """The keyword-searchable title: path parts as words, then the heading."""
    return " ".join(re.split(r"[/_.\-]+", chunk.path)) + " " + chunk.heading


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bases (
    name TEXT PRIMARY KEY, root TEXT NOT NULL, model TEXT NOT NULL,
    files INTEGER NOT NULL DEFAULT 0, chunks INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL, ingested REAL
);
CREATE TABLE IF NOT EXISTS files (
    base TEXT NOT NULL, path TEXT NOT NULL, fingerprint TEXT NOT NULL, size INTEGER NOT NULL,
    chunks INTEGER NOT NULL, kind TEXT NOT NULL, PRIMARY KEY (base, path)
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, base TEXT NOT NULL, path TEXT NOT NULL, ordinal INTEGER NOT NULL,
    line_start INTEGER NOT NULL, line_end INTEGER NOT NULL, page INTEGER, heading TEXT NOT NULL, text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_file ON chunks (base, path);
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_fts USING fts5(
    title, body, content='', contentless_delete=1, tokenize='porter unicode61'
);
"""


class SqliteKnowledgeStore(SqliteStore):
    """The knowledge index in one SQLite file (sqlite-vec for vectors, FTS5 for keywords)."""

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
                raise StateFileError(self.path, f"built for schema {stored.get('schema')} with {stored.get('dim')}-"
                                     f"dimensional vectors, not schema {SCHEMA_VERSION} with {dim}")
            db.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS chunk_vec USING vec0("
                       f"chunk_id INTEGER PRIMARY KEY, base TEXT partition key, "
                       f"embedding float[{dim}] distance_metric=cosine)")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:  # type: ignore[override]
        db = sqlite3.connect(str(self.path), timeout=30)
        try:
            db.enable_load_extension(True)
            sqlite_vec.load(db)
            db.enable_load_extension(False)
            db.execute("PRAGMA journal_mode=WAL")
            db.row_factory = sqlite3.Row
            with db:
                yield db
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise StateFileError(self.path, f"damaged or not a SQLite database (sqlite says: {exc})") from None
            raise
        finally:
            db.close()

    def verify(self) -> None:
        """Raise `StateFileError` unless SQLite's quick check passes (every page, every index)."""
        with self._connect() as db:
            problems = [r[0] for r in db.execute("PRAGMA quick_check(5)").fetchall()]
        if problems != ["ok"]:
            raise StateFileError(self.path, "damaged (quick_check: " + "; ".join(problems)[:300] + ")")

    # --- bases ---------------------------------------------------------------------

    def bases(self) -> list[BaseInfo]:
        with self._connect() as db:
            return [BaseInfo(**dict(r)) for r in db.execute("SELECT * FROM bases ORDER BY name")]

    def base(self, name: str) -> BaseInfo | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM bases WHERE name = ?", (name,)).fetchone()
        return BaseInfo(**dict(row)) if row else None

    def create_base(self, name: str, root: str, model: str) -> BaseInfo:
        with self._connect() as db:
            db.execute("INSERT OR IGNORE INTO bases (name, root, model, created) VALUES (?, ?, ?, ?)",
                       (name, root, model, time.time()))
        info = self.base(name)
        assert info is not None
        return info

    def _delete_chunks(self, db: sqlite3.Connection, where: str, args: tuple) -> None:
        ids = [r[0] for r in db.execute(f"SELECT id FROM chunks WHERE {where}", args)]
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            marks = ",".join("?" * len(part))
            db.execute(f"DELETE FROM chunk_vec WHERE chunk_id IN ({marks})", part)
            db.execute(f"DELETE FROM chunk_fts WHERE rowid IN ({marks})", part)
            db.execute(f"DELETE FROM chunks WHERE id IN ({marks})", part)

    def reset_base(self, name: str, model: str) -> None:
        """Forget every file of `name` (its vectors came from another model)."""
        with self._connect() as db:
            self._delete_chunks(db, "base = ?", (name,))
            db.execute("DELETE FROM files WHERE base = ?", (name,))
            db.execute("UPDATE bases SET model = ?, files = 0, chunks = 0 WHERE name = ?", (model, name))

    def drop_base(self, name: str) -> bool:
        with self._connect() as db:
            self._delete_chunks(db, "base = ?", (name,))
            db.execute("DELETE FROM files WHERE base = ?", (name,))
            return db.execute("DELETE FROM bases WHERE name = ?", (name,)).rowcount > 0

    # --- files ---------------------------------------------------------------------

    def files(self, name: str) -> dict[str, FileState]:
        with self._connect() as db:
            rows = db.execute("SELECT path, fingerprint, size, chunks, kind FROM files WHERE base = ?", (name,))
            return {r["path"]: FileState(**dict(r)) for r in rows}

    def put_file(self, name: str, state: FileState, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Replace one file's passages in one transaction: a reader sees the old ones or the new ones."""
        vectors = np.asarray(vectors, dtype=np.float32)
        assert len(chunks) == len(vectors), "one vector per chunk"
        with self._connect() as db:
            self._delete_chunks(db, "base = ? AND path = ?", (name, state.path))
            for chunk, vector in zip(chunks, vectors, strict=True):
                cursor = db.execute(
                    "INSERT INTO chunks (base, path, ordinal, line_start, line_end, page, heading, text)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, chunk.path, chunk.ordinal, chunk.line_start, chunk.line_end, chunk.page,
                     chunk.heading, chunk.text))
                chunk_id = cursor.lastrowid
                db.execute("INSERT INTO chunk_fts (rowid, title, body) VALUES (?, ?, ?)",
                           (chunk_id, title_of(chunk), chunk.text))
                db.execute("INSERT INTO chunk_vec (chunk_id, base, embedding) VALUES (?, ?, ?)",
                           (chunk_id, name, vector.tobytes()))
            db.execute("INSERT OR REPLACE INTO files (base, path, fingerprint, size, chunks, kind)"
                       " VALUES (?, ?, ?, ?, ?, ?)",
                       (name, state.path, state.fingerprint, state.size, len(chunks), state.kind))

    def remove_files(self, name: str, paths: Sequence[str]) -> None:
        with self._connect() as db:
            for path in paths:
                self._delete_chunks(db, "base = ? AND path = ?", (name, path))
                db.execute("DELETE FROM files WHERE base = ? AND path = ?", (name, path))

    def finish_ingest(self, name: str) -> BaseInfo:
        with self._connect() as db:
            files, chunks = db.execute("SELECT COUNT(*), COALESCE(SUM(chunks), 0) FROM files WHERE base = ?",
                                       (name,)).fetchone()
            db.execute("UPDATE bases SET files = ?, chunks = ?, ingested = ? WHERE name = ?",
                       (files, chunks, time.time(), name))
        info = self.base(name)
        assert info is not None
        return info

    # --- search --------------------------------------------------------------------

    def vector_search(self, name: str, vector: np.ndarray, k: int) -> list[Hit]:
        with self._connect() as db:
            rows = db.execute("SELECT chunk_id, distance FROM chunk_vec WHERE embedding MATCH ? AND k = ?"
                              " AND base = ? ORDER BY distance",
                              (np.asarray(vector, dtype=np.float32).tobytes(), k, name)).fetchall()
        return [Hit(r[0], 1.0 - float(r[1])) for r in rows]

    def keyword_search(self, name: str, query: str, k: int) -> list[Hit]:
        expression = fts_query(query)
        if expression is None:
            return []
        title_w, body_w = BM25_WEIGHTS
        with self._connect() as db:
            rows = db.execute(
                f"SELECT chunk_fts.rowid, bm25(chunk_fts, {title_w}, {body_w}) AS rank FROM chunk_fts"
                " CROSS JOIN chunks ON chunks.id = chunk_fts.rowid"  # the full-text match first, once
                " WHERE chunk_fts MATCH ? AND chunks.base = ? ORDER BY rank LIMIT ?",
                (expression, name, k)).fetchall()
        return [Hit(r[0], -float(r[1])) for r in rows]

    def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        out: dict[int, StoredChunk] = {}
        ids = list(ids)
        with self._connect() as db:
            for start in range(0, len(ids), 500):
                part = ids[start:start + 500]
                rows = db.execute(f"SELECT * FROM chunks WHERE id IN ({','.join('?' * len(part))})", part)
                for r in rows:
                    out[r["id"]] = StoredChunk(**dict(r))
        return out


# --- opening, and rebuilding a damaged file ----------------------------------------


class Opened(NamedTuple):
    store: SqliteKnowledgeStore  # or PgKnowledgeStore, its subclass
    rebuilt: str | None  # what was wrong and where the damaged file went, when it was replaced


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _move_aside(path: Path) -> Path:
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    path.replace(aside)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.replace(aside.with_name(aside.name + suffix))
    return aside


def open_store(path: Path, dim: int, *, verify: bool = False) -> Opened:
    """The index at `path`; a damaged (or incompatible) file is moved aside and a new one started.

    `verify` runs SQLite's quick check over every page (ingest does; a search only meets
    damage where it reads). Serialised by a lock beside the file, so two processes that
    find the damage at once move it aside once.
    """
    try:
        store = SqliteKnowledgeStore(path, dim)
        if verify:
            store.verify()
        return Opened(store, None)
    except StateFileError as first:
        with _file_lock(path.with_name(path.name + ".lock")):
            try:  # another process may have rebuilt it while we waited
                store = SqliteKnowledgeStore(path, dim)
                store.verify()
                return Opened(store, None)
            except StateFileError as again:
                aside = _move_aside(path)
                why = str(again.args[0]).split(". Move it aside")[0] if again.args else str(first)
                message = (f"the knowledge index was damaged ({why}); it was moved to {aside} and a new index "
                           "started: knowledge bases are indexed again as they are ingested")
                return Opened(SqliteKnowledgeStore(path, dim), message)


def open_knowledge(settings: Settings, dim: int, *, verify: bool = False) -> Opened:
    """The app's knowledge index: FOREMAN_DATABASE_URL's PostgreSQL when set, else the file under the home
    (`open_store`, which rebuilds a damaged file)."""
    pg = database("foreman_knowledge", settings.database_url)
    if pg is None:
        return open_store(settings.knowledge_db, dim, verify=verify)
    return Opened(PgKnowledgeStore(pg, dim), None)


# --- PostgreSQL ------------------------------------------------------------------------

PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bases (
    name TEXT PRIMARY KEY, root TEXT NOT NULL, model TEXT NOT NULL,
    files INTEGER NOT NULL DEFAULT 0, chunks INTEGER NOT NULL DEFAULT 0,
    created DOUBLE PRECISION NOT NULL, ingested DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS files (
    base TEXT NOT NULL, path TEXT NOT NULL, fingerprint TEXT NOT NULL, size BIGINT NOT NULL,
    chunks INTEGER NOT NULL, kind TEXT NOT NULL, PRIMARY KEY (base, path)
);
CREATE TABLE IF NOT EXISTS chunks (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, base TEXT NOT NULL, path TEXT NOT NULL,
    ordinal INTEGER NOT NULL, line_start INTEGER NOT NULL, line_end INTEGER NOT NULL, page INTEGER,
    heading TEXT NOT NULL, text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_file ON chunks (base, path);
CREATE TABLE IF NOT EXISTS chunk_terms (
    chunk_id BIGINT PRIMARY KEY REFERENCES chunks (id) ON DELETE CASCADE, base TEXT NOT NULL,
    terms tsvector NOT NULL
);
CREATE INDEX IF NOT EXISTS chunk_terms_gin ON chunk_terms USING gin (terms)
"""
TS_WEIGHTS = "{0.1, 0.2, 0.5, 1.0}"  # D, C, B (body), A (title): title twice the body, as BM25_WEIGHTS


class PgKnowledgeStore(SqliteKnowledgeStore):
    """The knowledge index in PostgreSQL (schema `foreman_knowledge`); reads of bases, files and
    chunks are the SQLite store's own code. Keywords and vectors cascade from `chunks`."""

    def __init__(self, db: PgDatabase, dim: int) -> None:
        self.db, self.dim = db, dim
        self.path = db.where  # type: ignore[assignment]

        def mismatch(schema: str | None, stored_dim: str | None) -> str:
            return (f"{db.where} holds a knowledge index of schema {schema} with {stored_dim}-dimensional "
                    f"vectors, not schema {SCHEMA_VERSION} with {dim}. It is derived data: drop it "
                    f"(DROP SCHEMA {db.schema} CASCADE) and ingest the folders again")

        self.vectors = prepare_store(db, dim, schema_sql=PG_SCHEMA, version=SCHEMA_VERSION, name="knowledge",
                                     vector_tables=lambda column_type: [
            (f"CREATE TABLE IF NOT EXISTS chunk_vectors (chunk_id BIGINT PRIMARY KEY REFERENCES chunks (id)"
            f" ON DELETE CASCADE, base TEXT NOT NULL, embedding {column_type} NOT NULL)"),
            "CREATE INDEX IF NOT EXISTS chunk_vectors_base ON chunk_vectors (base)"], mismatch=mismatch)

    def _connect(self):  # type: ignore[override]
        return self.db.connect()

    def verify(self) -> None:
        """Nothing to check: PostgreSQL guards its own pages (a damaged cluster is the operator's)."""

    def create_base(self, name: str, root: str, model: str) -> BaseInfo:
        with self._connect() as db:
            db.execute("INSERT INTO bases (name, root, model, created) VALUES (?, ?, ?, ?)"
                       " ON CONFLICT (name) DO NOTHING", (name, root, model, time.time()))
        info = self.base(name)
        assert info is not None
        return info

    def _delete_chunks(self, db, where: str, args: tuple) -> None:  # type: ignore[override]
        db.execute(f"DELETE FROM chunks WHERE {where}", args)  # keywords and vectors cascade

    def put_file(self, name: str, state: FileState, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Replace one file's passages in one transaction (ids drawn first, then batched inserts)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        assert len(chunks) == len(vectors), "one vector per chunk"
        with self._connect() as db:
            self._delete_chunks(db, "base = ? AND path = ?", (name, state.path))
            if chunks:
                ids = [r[0] for r in db.execute(
                    "SELECT nextval(pg_get_serial_sequence('chunks', 'id')) FROM generate_series(1, ?)",
                    (len(chunks),)).fetchall()]
                db.executemany(
                    "INSERT INTO chunks (id, base, path, ordinal, line_start, line_end, page, heading, text)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(i, name, c.path, c.ordinal, c.line_start, c.line_end, c.page, c.heading, c.text)
                     for i, c in zip(ids, chunks, strict=True)])
                db.executemany(
                    "INSERT INTO chunk_terms (chunk_id, base, terms) VALUES (?, ?, setweight(to_tsvector('english',"
                    " ?), 'A') || setweight(to_tsvector('english', ?), 'B'))",
                    [(i, name, title_of(c), c.text) for i, c in zip(ids, chunks, strict=True)])
                db.executemany(
                    f"INSERT INTO chunk_vectors (chunk_id, base, embedding) VALUES (?, ?, {self.vectors.placeholder})",
                    [(i, name, self.vectors.encode(v)) for i, v in zip(ids, vectors, strict=True)])
            db.execute("INSERT INTO files (base, path, fingerprint, size, chunks, kind) VALUES (?, ?, ?, ?, ?, ?)"
                       " ON CONFLICT (base, path) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,"
                       " size = EXCLUDED.size, chunks = EXCLUDED.chunks, kind = EXCLUDED.kind",
                       (name, state.path, state.fingerprint, state.size, len(chunks), state.kind))

    def finish_ingest(self, name: str) -> BaseInfo:
        with self._connect() as db:
            files, chunks = db.execute("SELECT COUNT(*), COALESCE(SUM(chunks), 0)::bigint FROM files WHERE base = ?",
                                       (name,)).fetchone()
            db.execute("UPDATE bases SET files = ?, chunks = ?, ingested = ? WHERE name = ?",
                       (files, chunks, time.time(), name))
        info = self.base(name)
        assert info is not None
        return info

    def vector_search(self, name: str, vector: np.ndarray, k: int) -> list[Hit]:
        with self._connect() as db:
            return [Hit(i, s) for i, s in self.vectors.nearest(db, "chunk_vectors", "chunk_id", "base = ?", (name,),
                                                               vector, k)]

    def keyword_search(self, name: str, query: str, k: int) -> list[Hit]:
        expression = ts_query(query)
        if expression is None:
            return []
        with self._connect() as db:
            rows = db.execute(
                f"SELECT chunk_id, ts_rank('{TS_WEIGHTS}', terms, q) AS rank FROM chunk_terms,"
                " to_tsquery('english', ?) q WHERE terms @@ q AND base = ? ORDER BY rank DESC, chunk_id LIMIT ?",
                (expression, name, k)).fetchall()
        return [Hit(r[0], float(r[1])) for r in rows]
