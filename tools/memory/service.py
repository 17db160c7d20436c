"""The app's one memory file under FOREMAN_HOME, and remembering and recalling facts in it.

Exists so that "which file, which embedding model" is answered once: the tools, the chat
flow, the CLI and `cf.Memory` ask for a user's facts and never open SQLite or load the model
themselves. Recall is semantic (the knowledge index's embedding model) plus keyword (FTS5),
fused by reciprocal rank, for the same reason as knowledge search: vectors find a
paraphrase ("what is my dog called" -> "the user's dog is named Rex"), keywords find exact
tokens ("VLAN 30", a password).
"""

from __future__ import annotations

from foreman.settings import Settings, get_settings
from foreman.tools.knowledge.embedding import Embedder, MiniLMEmbedder, default_embedder
from foreman.tools.memory.store import FACTS, Fact, Forgotten, MemoryStore, open_memory

RRF_K = 60
MIN_SIMILARITY = 0.2  # below this a vector neighbour is noise, unless its keywords matched too
MAX_K = 20
MAX_FACT_CHARS = 1_000


class Recalled(Fact):
    """A fact found for a query, with its fused score (higher is better)."""

    score: float
    similarity: float | None = None


def memory_store(settings: Settings | None = None, embedder: Embedder | None = None) -> MemoryStore:
    """The app's memory: FOREMAN_DATABASE_URL's PostgreSQL when set, else the file under FOREMAN_HOME
    (created on first use; a damaged one is an error naming it)."""
    settings = settings or get_settings()
    dim = embedder.dim if embedder is not None else MiniLMEmbedder.dim  # without loading the model
    return open_memory(settings, dim)


def remember(user: str, content: str, *, namespace: str = FACTS, source_thread: str | None = None,
             source_turn: int | None = None, settings: Settings | None = None,
             embedder: Embedder | None = None) -> tuple[Fact, bool]:
    """Keep `content` as one of `user`'s facts; (the fact, whether it is new). The same fact twice is kept once."""
    embedder = embedder or default_embedder()
    store = memory_store(settings, embedder)
    content = " ".join(content.split())[:MAX_FACT_CHARS]
    vector = embedder.embed([content])[0]
    return store.add_fact(user, content, vector, namespace=namespace, source_thread=source_thread,
                          source_turn=source_turn)


def recall(user: str, query: str, k: int = 5, *, namespace: str = FACTS, settings: Settings | None = None,
           embedder: Embedder | None = None, min_similarity: float = MIN_SIMILARITY) -> list[Recalled]:
    """`user`'s facts most relevant to `query`, best first; nobody else's facts are ever read."""
    embedder = embedder or default_embedder()
    store = memory_store(settings, embedder)
    k = max(1, min(k, MAX_K))
    candidates = max(30, 3 * k)
    vector_hits = store.vector_search(user, namespace, embedder.embed([query])[0], candidates)
    keyword_hits = store.keyword_search(user, namespace, query, candidates)
    similarity = {h.fact_id: h.score for h in vector_hits}
    keyword_ids = {h.fact_id for h in keyword_hits}
    scores: dict[int, float] = {}
    for hits in (vector_hits, keyword_hits):
        for rank, hit in enumerate(hits, start=1):
            scores[hit.fact_id] = scores.get(hit.fact_id, 0.0) + 1.0 / (RRF_K + rank)
    kept = [i for i in scores if i in keyword_ids or similarity.get(i, 0.0) >= min_similarity]
    best = sorted(kept, key=lambda i: (-scores[i], i))[:k]
    facts = store.facts_by_id(user, best)
    return [Recalled(**facts[i].model_dump(), score=round(scores[i], 5), similarity=similarity.get(i))
            for i in best if i in facts]


def forget(user: str, fact_id: int, *, namespace: str | None = None, settings: Settings | None = None) -> bool:
    """Delete one of `user`'s facts; False when `user` has no fact with that id."""
    return memory_store(settings).delete_fact(user, fact_id, namespace)


def forget_user(user: str, settings: Settings | None = None) -> Forgotten:
    """Everything remembered about `user`: threads, turns, facts, their keywords and embeddings."""
    return memory_store(settings).forget_user(user)
