"""Foreman's own stores, SQLite vs PostgreSQL: write/read operations per second, and knowledge
query latency at 5k chunks (pgvector, and the portable bytea column ranked in numpy).

    .venv/bin/python bench/stores.py [--ops 300] [--chunks 5000] [--queries 60]

Starts throwaway PostgreSQL servers (`foreman.pg`: Debian's, and pgserver's bundled one with
pgvector when installed) and removes them afterwards. Store-level timings only: the
embedding model is not run (vectors are random unit vectors, texts drawn from a small
vocabulary), so the figures are the store's, not MiniLM's. Prints a table; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from foreman.db import PgDatabase
from foreman.engine.store import PgRunStore, RunStore
from foreman.pg import TempPostgres, pgvector_bin_dir
from foreman.tools.audit import AuditLog, AuditRecord, PgAuditLog
from foreman.tools.knowledge.chunking import Chunk
from foreman.tools.knowledge.store import FileState, PgKnowledgeStore, SqliteKnowledgeStore

DIM = 384
WORDS = ["backup", "disk", "router", "vlan", "printer", "warranty", "battery", "garden", "tomato", "water",
         "schedule", "nightly", "restore", "snapshot", "kernel", "update", "firewall", "port", "camera",
         "doorbell", "thermostat", "heating", "invoice", "budget", "grocery", "recipe", "oven", "timer",
         "alarm", "sensor", "humidity", "solar", "inverter", "meter"]


def rate(n: int, fn: Callable[[int], object]) -> float:
    started = time.perf_counter()
    for i in range(n):
        fn(i)
    return round(n / (time.perf_counter() - started), 1)


def store_ops(runs: RunStore, audit: AuditLog, n: int) -> dict[str, float]:
    """Operations per second: one call is one transaction, as a step or a tool wrapper makes it."""
    out = {
        "run_write": rate(n, lambda i: runs.save_result("bench", f"n{i}", "fp", "agent", {"i": i, "text": "x" * 200})),
        "run_read": rate(n, lambda i: runs.finished_results("bench")),
        "audit_write": rate(n, lambda i: audit.record(AuditRecord(run_id="bench-run", tool="read_file",
                                                                  arguments={"path": f"f{i}"}, outcome="ok"))),
    }
    out["audit_read"] = rate(max(n // 10, 10), lambda i: audit.for_run("bench-run"))
    return out


def fill_knowledge(store: SqliteKnowledgeStore, chunks: int, rng: np.random.Generator) -> float:
    store.create_base("bench", "/bench", "random")
    started = time.perf_counter()
    per_file = 50
    for f in range(chunks // per_file):
        texts = [" ".join(rng.choice(WORDS, 40)) for _ in range(per_file)]
        vectors = rng.standard_normal((per_file, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        items = [Chunk(path=f"f{f}.md", ordinal=i, line_start=i, line_end=i, text=t) for i, t in enumerate(texts)]
        store.put_file("bench", FileState(path=f"f{f}.md", fingerprint=str(f), size=1, chunks=per_file, kind="md"),
                       items, vectors)
    store.finish_ingest("bench")
    return round(time.perf_counter() - started, 2)


def query_latency(store: SqliteKnowledgeStore, queries: int, rng: np.random.Generator) -> dict[str, float]:
    """ms per vector and per keyword query (k=30, as hybrid search asks each list), p50 and p95."""
    out = {}
    for kind in ("vector", "keyword"):
        times = []
        for _ in range(queries):
            vector = rng.standard_normal(DIM).astype(np.float32)
            words = " ".join(rng.choice(WORDS, 3))
            started = time.perf_counter()
            hits = store.vector_search("bench", vector, 30) if kind == "vector" else store.keyword_search(
                "bench", words, 30)
            times.append((time.perf_counter() - started) * 1000)
            assert hits, kind
        times.sort()
        out[f"{kind}_p50_ms"] = round(statistics.median(times), 2)
        out[f"{kind}_p95_ms"] = round(times[max(0, round(0.95 * len(times)) - 1)], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--chunks", type=int, default=5000)
    parser.add_argument("--queries", type=int, default=60)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="foreman-bench-stores-"))
    rng = np.random.default_rng(7)
    results: dict[str, dict] = {}
    servers = [("postgres", TempPostgres(folder / "pg"))]
    vector_bin = pgvector_bin_dir()
    if vector_bin is not None:
        servers.append(("pgvector", TempPostgres(folder / "pgvector", bin_dir=vector_bin)))
    try:
        results["sqlite"] = store_ops(RunStore(folder / "runs.sqlite3"), AuditLog(folder / "audit.sqlite3"), args.ops)
        sqlite_kb = SqliteKnowledgeStore(folder / "knowledge.sqlite3", DIM)
        results["sqlite"]["ingest_s"] = fill_knowledge(sqlite_kb, args.chunks, rng)
        results["sqlite"].update(query_latency(sqlite_kb, args.queries, rng))
        for name, server in servers:
            server.start()
            server.create_database("bench")
            url = server.dsn("bench")
            entry = results[name] = {}
            if name == "postgres":
                entry.update(store_ops(PgRunStore(PgDatabase(url, "foreman_runs")),
                                       PgAuditLog(PgDatabase(url, "foreman_audit")), args.ops))
            kb = PgKnowledgeStore(PgDatabase(url, "foreman_knowledge"), DIM)
            entry["vectors"] = "pgvector" if kb.vectors.pgvector else "bytea+numpy"
            entry["ingest_s"] = fill_knowledge(kb, args.chunks, rng)
            entry.update(query_latency(kb, args.queries, rng))
            server.stop()
    finally:
        for _, server in servers:
            server.remove()
    print(f"{'backend':<10} {'run w/s':>8} {'run r/s':>8} {'audit w/s':>9} {'audit r/s':>9} "
          f"{'ingest s':>8} {'vec p95':>8} {'kw p95':>8}  vectors")
    for name, r in results.items():
        print(f"{name:<10} {r.get('run_write', '-'):>8} {r.get('run_read', '-'):>8} {r.get('audit_write', '-'):>9} "
              f"{r.get('audit_read', '-'):>9} {r['ingest_s']:>8} {r['vector_p95_ms']:>8} {r['keyword_p95_ms']:>8}  "
              f"{r.get('vectors', 'sqlite-vec')}")
    summary = {"chunks": args.chunks, "ops": args.ops, **{f"{b}_{k}": v for b, r in results.items() for k, v in r.items()}}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
