"""The `search_knowledge` tool's guard and body: passages from the bases this run may read.

Which bases a run may search is the run policy's decision (`RunPolicy.knowledge_bases`,
by default the run's own workspace index); it reaches the tool as a `KnowledgeScope` in
the run's `ToolEnv`, never as an argument the model could change. Naming another base is
refused before anything is read, saying which bases are allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from foreman.errors import ToolError, ToolRefused
from foreman.settings import get_settings

TOOL = "search_knowledge"
MAX_K = 20  # the same cap as `search.MAX_K`; kept here so building the tool imports no numpy
MAX_QUERY_CHARS = 500
MAX_PASSAGE_CHARS = 1_200


class KnowledgeScope(BaseModel):
    """The knowledge bases one run may search, and the app home whose index holds them."""

    model_config = ConfigDict(frozen=True)

    bases: tuple[str, ...] = ()
    home: Path | None = None  # None: the current settings' FOREMAN_HOME


def search_knowledge(scope: KnowledgeScope, query: str, k: int = 5,
                     knowledge_base: str | None = None) -> list[dict[str, Any]]:
    """Passages for `query` as {"source", "heading", "text", "score"}, best first."""
    from foreman.tools.knowledge.service import (  # numpy, SQLite: only when called
        find_passages,
        list_bases,
    )

    if not query.strip():
        raise ToolRefused(TOOL, "the query is empty; say what to look for in a few words")
    if len(query) > MAX_QUERY_CHARS:
        raise ToolRefused(TOOL, f"the query has {len(query)} characters; use at most {MAX_QUERY_CHARS}")
    if not 1 <= k <= MAX_K:
        raise ToolRefused(TOOL, f"k must be between 1 and {MAX_K}, not {k}")
    if not scope.bases:
        raise ToolRefused(TOOL, "this run may not search any knowledge base")
    if knowledge_base is not None and knowledge_base not in scope.bases:
        raise ToolRefused(TOOL, f"knowledge base {knowledge_base!r} is not allowed in this run; "
                                f"allowed: {', '.join(scope.bases)}")
    settings = get_settings()
    if scope.home is not None:
        settings = settings.model_copy(update={"home": scope.home})
    wanted = [knowledge_base] if knowledge_base else list(scope.bases)
    known = {b.name for b in list_bases(settings)}
    if not any(b in known for b in wanted):
        raise ToolError(f"{TOOL}: knowledge base(s) {', '.join(wanted)} not ingested yet; "
                        "`foreman knowledge ingest FOLDER` builds one")
    passages = find_passages(wanted, query, k, settings=settings, strict=False)
    return [{"source": p.source, "heading": p.heading, "text": p.text[:MAX_PASSAGE_CHARS], "score": round(p.score, 4)}
            for p in passages]
