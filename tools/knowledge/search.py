"""Finding passages: nearest vectors, BM25 keywords, and their reciprocal-rank fusion.

Why fusion: vectors find a paraphrase ("when is the family meeting" -> "launch meeting
with the family"), keywords find exact tokens a small embedding model blurs (host names,
error codes, "03:00", "VLAN 30"). Reciprocal rank fusion (score = sum of 1/(60 + rank)
over the lists a passage is in) needs no score calibration between the two. Which mode
is the default is a measured choice: `bench/knowledge.py` prints recall@5 and MRR for
each, and `DEFAULT_MODE` follows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from pydantic import BaseModel

from foreman.tools.knowledge.embedding import Embedder
from foreman.tools.knowledge.store import Hit, KnowledgeStore

Mode = Literal["hybrid", "vector", "keyword"]
DEFAULT_MODE: Mode = "hybrid"
RRF_K = 60
CANDIDATES = 30  # per list and base, before fusion
MAX_K = 20
_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="knowledge-keywords")


class Passage(BaseModel):
    """One passage found for a query, with where it came from."""

    base: str
    path: str
    line_start: int
    line_end: int
    page: int | None = None
    heading: str = ""
    text: str
    score: float  # the fused (or single-list) score: higher is better
    similarity: float | None = None  # cosine similarity to the query, when the vector list had it
    keyword_rank: int | None = None  # 1-based rank in the BM25 list, when it was there

    @property
    def source(self) -> str:
        """`path:line` (or `path:start-end`; a PDF's lines count within its page)."""
        lines = f"{self.line_start}" if self.line_start == self.line_end else f"{self.line_start}-{self.line_end}"
        return f"{self.path}:{lines}" if self.page is None else f"{self.path}:p{self.page}:{lines}"


def fuse(lists: Iterable[Sequence[Hit]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal rank fusion of ranked hit lists: chunk id -> fused score."""
    scores: dict[int, float] = {}
    for hits in lists:
        for rank, hit in enumerate(hits, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (k + rank)
    return scores


def search(store: KnowledgeStore, embedder: Embedder, bases: Sequence[str], query: str, k: int = 5,
           mode: Mode = DEFAULT_MODE) -> list[Passage]:
    """The best `k` passages for `query` across `bases`, best first."""
    k = max(1, min(k, MAX_K))
    candidates = max(CANDIDATES, k * 3)
    vector_lists: list[list[Hit]] = []
    keyword_lists: list[list[Hit]] = []
    keywords = (_pool.submit(lambda: [store.keyword_search(b, query, candidates) for b in bases])
                if mode in ("hybrid", "keyword") else None)  # runs while the query is embedded
    if mode in ("hybrid", "vector"):
        vector = embedder.embed([query])[0]
        vector_lists = [store.vector_search(b, vector, candidates) for b in bases]
    if keywords is not None:
        keyword_lists = keywords.result()
    similarity = {h.chunk_id: h.score for hits in vector_lists for h in hits}
    keyword_rank = {h.chunk_id: rank for hits in keyword_lists for rank, h in enumerate(hits, start=1)}
    if mode == "hybrid":
        scores = fuse([*vector_lists, *keyword_lists])
    else:  # one list per base: merge by the list's own score
        scores = {h.chunk_id: h.score for hits in (vector_lists or keyword_lists) for h in hits}
    best = sorted(scores, key=lambda i: (-scores[i], i))[:k]
    chunks = store.chunks(best)
    return [
        Passage(base=c.base, path=c.path, line_start=c.line_start, line_end=c.line_end, page=c.page,
                heading=c.heading, text=c.text, score=scores[i], similarity=similarity.get(i),
                keyword_rank=keyword_rank.get(i))
        for i in best if (c := chunks.get(i)) is not None
    ]
