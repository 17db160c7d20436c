"""The app's one knowledge index under FOREMAN_HOME: what the tool, the CLI and grounding share.

Exists so that "which file, which model, which bases exist" is answered once: callers ask
for passages by base name and never open SQLite or load the model themselves.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from foreman.errors import StateFileError, UnknownKnowledgeBase
from foreman.settings import Settings, get_settings
from foreman.tools.knowledge.embedding import Embedder, default_embedder
from foreman.tools.knowledge.search import DEFAULT_MODE, Mode, Passage, search
from foreman.tools.knowledge.store import (
    BaseInfo,
    KnowledgeStore,
    open_knowledge,
    open_store,
)

log = logging.getLogger("foreman.knowledge")


_opened: dict[tuple[Path | str, int], tuple[int, KnowledgeStore]] = {}
_lock = threading.Lock()


def app_store(settings: Settings | None = None, embedder: Embedder | None = None) -> KnowledgeStore:
    """The index: FOREMAN_DATABASE_URL's PostgreSQL, or the file under FOREMAN_HOME (a damaged one is
    rebuilt, with a warning).

    Opened once per process and file: opening creates the schema and loads sqlite-vec, which
    costs more than a query. A file replaced since (rebuilt by another process, dropped by a
    test) is opened again, told by its inode."""
    settings = settings or get_settings()
    dim = (embedder or default_embedder()).dim
    if settings.database_url:  # PostgreSQL: no file inode to watch
        database_key = (settings.database_url, dim)
        with _lock:
            if database_key not in _opened:
                _opened[database_key] = (0, open_knowledge(settings, dim).store)
            return _opened[database_key][1]
    path = settings.knowledge_db
    key = (path, dim)
    with _lock:
        cached = _opened.get(key)
        if cached is not None and path.exists() and path.stat().st_ino == cached[0]:
            return cached[1]
        opened = open_store(path, dim)
        if opened.rebuilt:
            log.warning(opened.rebuilt)
        _opened[key] = (path.stat().st_ino, opened.store)
        return opened.store


def list_bases(settings: Settings | None = None) -> list[BaseInfo]:
    return app_store(settings).bases()


def existing(bases: Sequence[str], settings: Settings | None = None) -> list[str]:
    """The names in `bases` that have been ingested."""
    known = {b.name for b in list_bases(settings)}
    return [b for b in bases if b in known]


def require_bases(bases: Sequence[str], settings: Settings | None = None) -> list[str]:
    """`bases`, each of which must have been ingested (`UnknownKnowledgeBase` names the first that was not)."""
    known = {b.name for b in list_bases(settings)}
    for name in bases:
        if name not in known:
            raise UnknownKnowledgeBase(name, known)
    return list(bases)


def find_passages(bases: Sequence[str], query: str, k: int = 5, *, mode: Mode = DEFAULT_MODE,
                  settings: Settings | None = None, embedder: Embedder | None = None,
                  strict: bool = True) -> list[Passage]:
    """The best `k` passages for `query` in the named bases. An unknown name is an error when
    `strict` (a person typed it); otherwise bases not ingested yet are left out."""
    embedder = embedder or default_embedder()
    store = app_store(settings, embedder)
    try:
        known = {b.name for b in store.bases()}
    except StateFileError:  # a file damaged since it was opened: rebuilt (empty) on the next open
        with _lock:
            _opened.pop(((settings or get_settings()).knowledge_db, embedder.dim), None)
        store = app_store(settings, embedder)
        known = {b.name for b in store.bases()}
    missing = [b for b in bases if b not in known]
    if missing and strict:
        raise UnknownKnowledgeBase(missing[0], known)
    present = [b for b in bases if b in known]
    return search(store, embedder, present, query, k, mode) if present else []


def drop_base(name: str, settings: Settings | None = None) -> bool:
    """Forget knowledge base `name` and its passages; False when it did not exist."""
    return app_store(settings).drop_base(name)
