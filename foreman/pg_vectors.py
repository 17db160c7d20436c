"""Nearest vectors in PostgreSQL: pgvector when the server has it, exact cosine in numpy when not.

Memory and knowledge both keep one embedding per row and ask for the k most similar within
a partition (a knowledge base, a user's namespace). With the `vector` extension the column
is `vector(dim)` and PostgreSQL ranks by `<=>` (cosine distance), an exact scan: the
partition filter would cut an approximate (HNSW) index's k results short, and an exact scan
is what sqlite-vec does too, so both backends return the same neighbours. Without it
(Debian's `postgresql` has no pgvector package here) the column is `bytea` holding float32
and the partition's vectors (kept at unit length) are ranked in numpy: the same answer, paid for in transfer
(bench/stores.py measures it at 5k chunks).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from foreman.db import PgConnection, PgDatabase
from foreman.errors import ConfigurationError

EXTENSION = "vector"


def enable_pgvector(db: PgDatabase) -> bool:
    """Create the `vector` extension in `public` if the server has it; whether vectors are pgvector's."""
    if not db.has_extension(EXTENSION):
        return False
    try:
        with db.connect() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('foreman:pgvector'))")
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
    except Exception as exc:  # noqa: BLE001  (no right to create it: say so, then use the portable column)
        import logging

        logging.getLogger("foreman.db").warning(
            "pgvector is installed on the server but `CREATE EXTENSION vector` failed (%s); vectors are ranked "
            "in Python instead. A superuser can run it once in the database to enable it.", exc)
        return False
    return True


class Vectors:
    """One embedding column: its SQL type, how a vector is written, and k-nearest by cosine."""

    def __init__(self, pgvector: bool, dim: int) -> None:
        self.pgvector = pgvector
        self.dim = dim

    @property
    def column_type(self) -> str:
        return f"public.vector({self.dim})" if self.pgvector else "bytea"

    @property
    def placeholder(self) -> str:
        """The value placeholder for an INSERT (a text literal cast to `vector`, or raw bytes)."""
        return "?::public.vector" if self.pgvector else "?"

    def encode(self, vector: np.ndarray) -> Any:
        values = np.asarray(vector, dtype=np.float32)
        if self.pgvector:
            return "[" + ",".join(f"{x:.7g}" for x in values.tolist()) + "]"
        return _unit(values).tobytes()  # stored at unit length: a query is one matrix-vector product

    def nearest(self, db: PgConnection, table: str, id_column: str, where: str, params: Sequence[Any],
                vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(id, cosine similarity) of the `k` rows of `table` matching `where` nearest to `vector`."""
        if self.pgvector:
            rows = db.execute(
                f"SELECT {id_column}, embedding <=> ?::public.vector AS distance FROM {table} WHERE {where}"
                " ORDER BY distance LIMIT ?", (self.encode(vector), *params, k)).fetchall()
            return [(r[0], 1.0 - float(r[1])) for r in rows]
        # Binary results as plain tuples: hex-decoding bytea and building named rows cost 4x the query.
        from psycopg.rows import tuple_row

        cursor = db.raw.cursor(binary=True, row_factory=tuple_row)
        rows = cursor.execute(db.sql(f"SELECT {id_column}, embedding FROM {table} WHERE {where}"),
                              tuple(params)).fetchall()
        if not rows:
            return []
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        similarity = matrix @ _unit(np.asarray(vector, dtype=np.float32))
        best = np.argsort(-similarity, kind="stable")[:k]
        return [(int(ids[i]), float(similarity[i])) for i in best]


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


_PREPARED: dict[tuple[int, str, str, int], Vectors] = {}


def prepare_store(db: PgDatabase, dim: int, *, schema_sql: str, version: str, name: str,
                  vector_tables: Callable[[str], Sequence[str]], mismatch: Callable[[str | None, str | None], str]) -> Vectors:
    """A store's schema, its `meta` record (schema version, vector size, column kind) and its vector
    tables, made once per process, under an advisory lock so two processes agree on the column kind.

    `vector_tables(column_type)`: the statements that create the embedding tables; `mismatch(schema,
    dim)`: the message for a database holding another version or vector size (a `ConfigurationError`)."""
    ready = (os.getpid(), db.url, db.schema, dim)
    if ready in _PREPARED:
        return _PREPARED[ready]
    db.ensure(schema_sql)
    vectors = Vectors(enable_pgvector(db), dim)
    with db.connect() as conn:
        conn.execute(f"SELECT pg_advisory_xact_lock(hashtext('foreman:{name}-meta'))")
        stored = {r[0]: r[1] for r in conn.execute("SELECT key, value FROM meta").fetchall()}
        kind = "pgvector" if vectors.pgvector else "bytea"
        if not stored:
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                             [("schema", version), ("dim", str(dim)), ("vectors", kind)])
        elif (stored.get("schema"), stored.get("dim")) != (version, str(dim)):
            raise ConfigurationError(mismatch(stored.get("schema"), stored.get("dim")))
        else:  # the column kind the first process chose, even if this one could do pgvector
            vectors = Vectors(stored.get("vectors", kind) == "pgvector" and vectors.pgvector, dim)
        for statement in vector_tables(vectors.column_type):
            conn.execute(statement)
    _PREPARED[ready] = vectors
    return vectors
