"""Knowledge retrieval: recall@5 and MRR for vector, BM25 and hybrid; ingest speed; query latency at 5k.

    .venv/bin/python bench/knowledge.py [--questions bench/questions/homelab.yaml] [--corpus demo/workspace]

The corpus is the shipped demo workspace (a few dozen files of every kind the ingest reads);
the labelled set is bench/questions/homelab.yaml (each question names the file and a phrase
of the passage that answers it). A retrieved passage is a hit when it is from that file and
contains the phrase. Everything runs in a throwaway FOREMAN_HOME, with the shipped model.

Latency at 5k passages: a second knowledge base of 5,000 synthetic passages (lines of the
corpus shuffled into new passages, so the keyword index sees the real vocabulary; vectors are
mixes of two real passage vectors plus noise, normalised, because embedding 5,000 texts would
take minutes and the index's speed does not depend on where its vectors came from). The timed
query is the whole search as the tool runs it: embed the query, both lists, fusion, the fetch.

Prints one line per figure and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ["FOREMAN_HOME"] = tempfile.mkdtemp(prefix="foreman-bench-knowledge-")

import numpy as np
import yaml

from foreman.settings import get_settings
from foreman.tools.knowledge.chunking import Chunk
from foreman.tools.knowledge.embedding import default_embedder
from foreman.tools.knowledge.ingest import ingest
from foreman.tools.knowledge.search import search
from foreman.tools.knowledge.service import app_store
from foreman.tools.knowledge.store import FileState

MODES = ("vector", "keyword", "hybrid")
SYNTHETIC = 5_000


def load_questions(path: Path) -> list[dict]:
    questions = yaml.safe_load(path.read_text())
    for q in questions:
        q.setdefault("kind", "lookup")
    return questions


def is_hit(passage, answers: list[dict]) -> bool:
    return any(passage.path == a["path"] and a["contains"].lower() in passage.text.lower() for a in answers)


def rank_of_first_hit(passages, answers) -> int | None:
    return next((i for i, p in enumerate(passages, start=1) if is_hit(p, answers)), None)


def evaluate(store, embedder, base: str, questions: list[dict], mode: str, k: int = 10) -> dict:
    recall5, reciprocal, misses = 0, 0.0, []
    for q in questions:
        rank = rank_of_first_hit(search(store, embedder, [base], q["question"], k, mode), q["answers"])
        recall5 += rank is not None and rank <= 5
        reciprocal += 1.0 / rank if rank else 0.0
        if rank is None or rank > 5:
            misses.append(q["question"])
    n = len(questions)
    return {"recall_at_5": round(recall5 / n, 3), "mrr": round(reciprocal / n, 3), "misses": misses}


def synthetic_base(store, corpus_base: str, rng: random.Random) -> str:
    """5,000 passages made from the corpus' own lines and vectors (see the module docstring)."""
    rows = store.chunks(range(1, 100_000))
    chunks = [c for c in rows.values() if c.base == corpus_base]
    lines = [line for c in chunks for line in c.text.splitlines() if line.strip()]
    ids = [c.id for c in chunks]
    with store._connect() as db:
        vectors = {r[0]: np.frombuffer(r[1], dtype=np.float32)
                   for r in db.execute("SELECT chunk_id, embedding FROM chunk_vec WHERE base = ?", (corpus_base,))}
    name = "bench-5k"
    store.create_base(name, "/synthetic", default_embedder().model_id)
    per_file = 10
    for f in range(SYNTHETIC // per_file):
        path = f"synthetic/{f:04d}.md"
        made, vecs = [], []
        for i in range(per_file):
            text = "\n".join(rng.sample(lines, 8))
            made.append(Chunk(path=path, ordinal=i, line_start=1 + 8 * i, line_end=8 + 8 * i, heading="", text=text))
            a, b = vectors[rng.choice(ids)], vectors[rng.choice(ids)]
            v = a + b + np.random.default_rng(f * per_file + i).normal(0, 0.05, a.shape).astype(np.float32)
            vecs.append(v / np.linalg.norm(v))
        store.put_file(name, FileState(path=path, fingerprint="synthetic", size=0, chunks=per_file, kind="text"),
                       made, np.stack(vecs))
    store.finish_ingest(name)
    return name


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=Path, default=REPO / "bench" / "questions" / "homelab.yaml")
    parser.add_argument("--corpus", type=Path, default=REPO / "demo" / "workspace")
    args = parser.parse_args()
    questions = load_questions(args.questions)
    settings = get_settings()
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} on {os.cpu_count()} cores")

    started = time.monotonic()
    embedder = default_embedder()
    load_s = time.monotonic() - started
    cold = ingest(args.corpus, name="corpus", roots=[args.corpus], settings=settings)
    warm = ingest(args.corpus, name="corpus", roots=[args.corpus], settings=settings)
    documents = cold.files_indexed
    print(f"corpus: {documents} documents, {cold.chunks_total} passages, skipped {cold.skipped_count} "
          f"({', '.join(cold.skipped)}); {len(questions)} questions")
    print(f"ingest cold: {cold.seconds:.1f} s (+{load_s:.1f} s model load), embedding {cold.chunks_per_s:.1f} passages/s, "
          f"{cold.chunks_total / cold.seconds:.1f} passages/s overall; unchanged re-ingest {warm.seconds:.2f} s")

    store = app_store(settings, embedder)
    results = {}
    for mode in MODES:
        results[mode] = evaluate(store, embedder, "corpus", questions, mode)
        print(f"{mode:8s} recall@5 {results[mode]['recall_at_5']:.3f}  MRR {results[mode]['mrr']:.3f}  "
              f"misses: {results[mode]['misses']}")

    base = synthetic_base(store, "corpus", random.Random(12))
    timings: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(3):
        for q in questions:
            for mode in MODES:
                t = time.perf_counter()
                search(store, embedder, [base], q["question"], 5, mode)
                timings[mode].append((time.perf_counter() - t) * 1000)
    info = store.base(base)
    for mode in MODES:
        print(f"query at {info.chunks} passages, {mode:8s}: p50 {statistics.median(timings[mode]):.1f} ms, "
              f"p95 {percentile(timings[mode], 95):.1f} ms")
    print(f"load after: {os.getloadavg()[0]:.2f}")
    summary = {
        "recall_at_5": results["hybrid"]["recall_at_5"], "mrr": results["hybrid"]["mrr"],
        "query_p50_ms": round(statistics.median(timings["hybrid"]), 1),
        "query_p95_ms": round(percentile(timings["hybrid"], 95), 1),
        "ingest_chunks_per_s": round(cold.chunks_per_s, 1),
        "ingest_cold_s": round(cold.seconds, 1), "ingest_unchanged_s": round(warm.seconds, 2),
        "documents": documents, "chunks": cold.chunks_total, "questions": len(questions),
        "by_mode": {m: {k: v for k, v in r.items() if k != "misses"} for m, r in results.items()},
        "p95_ms_by_mode": {m: round(percentile(t, 95), 1) for m, t in timings.items()},
        "load_1m": round(os.getloadavg()[0], 2),
    }
    sys.stdout.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
