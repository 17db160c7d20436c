"""Grounding: the passages an objective or a step needs, found by Python before any model call.

The design's first box ("ground: passages with sources, before any model call") as one
pure function for the flows to call: `ground(objective, policy, k)` brings the run's
workspace index up to date (incrementally: about a second when nothing changed) and
returns the top passages from the knowledge bases the run policy names, with their
`path:line` and scores. `format_passages` turns them into the text a task is given as
context, with the rule that makes a small model useful: answer only from these passages
and the results given, and say so when they do not contain the answer.

Only bases the policy names are read; the workspace is indexed only when its own base is
among them, under the run's own permission (its workspace), not FOREMAN_KNOWLEDGE_ROOTS.
"""

from __future__ import annotations

import logging
import time

from pydantic import BaseModel, Field

from foreman.engine.policy import RunPolicy
from foreman.settings import Settings, get_settings
from foreman.tools.knowledge.bases import workspace_base
from foreman.tools.knowledge.ingest import IngestReport, ingest
from foreman.tools.knowledge.search import Passage
from foreman.tools.knowledge.service import find_passages
from foreman.tools.tables.store import TableCatalog, sync_tables

log = logging.getLogger("foreman.grounding")

# Six, not four: the fast path picks its lines from all of them and shows the model four whole
# passages at most (engine/evidence.py): a table's row of the thing asked often ranks below rows
# that mention it more often.
DEFAULT_K = 6
# How long a run's grounding may spend embedding new or changed files before planning; the rest
# is indexed by later runs (or `foreman knowledge ingest`). The demo workspace needs about 11 s cold.
INDEX_BUDGET_S = 45.0
# Passages under this cosine similarity that BM25 did not find either are noise, not grounding.
MIN_SIMILARITY = 0.25
CONTEXT_CHARS = 4_000  # what the formatter gives a task at most: a small model's context is small

ANSWER_RULE = (
    "Answer only from these passages and the results given. Cite the source (path:line) of each fact "
    "you use. If they do not contain the answer, say that the notes do not say, rather than guessing."
)
# For the planner: the passages tell it what is already known, so it plans only what is missing.
PLANNER_RULE = (
    "These passages were found for the objective before planning. Plan only the steps the objective "
    "still needs: a question these passages answer needs one answer step and no file tools; counting, "
    "totals, comparisons or dates need a computed step."
)


class Grounding(BaseModel):
    """The passages found for one text, where they came from, and what the indexing did."""

    query: str
    passages: list[Passage] = Field(default_factory=list)
    bases: list[str] = Field(default_factory=list)
    indexed: IngestReport | None = None
    seconds: float = 0.0
    tables: TableCatalog | None = None  # the workspace's tables, for the query route (engine/query.py)

    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(p.source for p in self.passages))

    def __bool__(self) -> bool:
        return bool(self.passages)


def refresh_workspace(policy: RunPolicy, settings: Settings | None = None) -> IngestReport | None:
    """Index the run's workspace into its own base, when the policy lets the run read that base."""
    own = workspace_base(policy.workspace)
    if own not in policy.knowledge_bases:
        return None
    return ingest(policy.workspace, name=own, roots=[policy.workspace], settings=settings,
                  time_budget_s=INDEX_BUDGET_S)


def relevant(passage: Passage) -> bool:
    """Kept as grounding: found by keywords, or close enough in meaning."""
    return passage.keyword_rank is not None or (passage.similarity or 0.0) >= MIN_SIMILARITY


def ground(objective: str, policy: RunPolicy, k: int = DEFAULT_K, *, settings: Settings | None = None,
           refresh: bool = True) -> Grounding:
    """The top `k` passages for `objective` from the policy's knowledge bases, the workspace
    index refreshed first (`refresh=False` when it was just refreshed, e.g. per sub-task)."""
    settings = settings or get_settings()
    started = time.monotonic()
    indexed = refresh_workspace(policy, settings) if refresh else None
    passages = find_passages(list(policy.knowledge_bases), objective, k, settings=settings, strict=False)
    kept = [p for p in passages if relevant(p)]
    tables = sync_tables(policy.workspace, settings) \
        if refresh and workspace_base(policy.workspace) in policy.knowledge_bases else None
    grounding = Grounding(query=objective, passages=kept, bases=list(policy.knowledge_bases), indexed=indexed,
                          seconds=time.monotonic() - started, tables=tables)
    log.info("grounding: %d passage(s) in %.2f s: %s", len(kept), grounding.seconds, ", ".join(grounding.sources))
    return grounding


def format_passages(grounding: Grounding, max_chars: int = CONTEXT_CHARS, rule: str = ANSWER_RULE) -> str:
    """The passages as task context: numbered, each under its source, cut to `max_chars` in all."""
    if not grounding.passages:
        return ""
    parts = [f"Passages from the knowledge base for: {grounding.query}"]
    used = len(parts[0])
    for number, passage in enumerate(grounding.passages, start=1):
        head = f"[{number}] {passage.source}" + (f" ({passage.heading})" if passage.heading else "")
        body = passage.text
        room = max_chars - used - len(head) - 2
        if room < 80:
            break
        if len(body) > room:
            body = body[:room].rsplit("\n", 1)[0] + "\n[...]"
        parts.append(f"{head}\n{body}")
        used += len(head) + len(body) + 2
    parts.append(rule)
    return "\n\n".join(parts)
