"""The `remember`, `recall` and `forget` tools: a user's long-term memory, as the run allows.

None of them takes a user: the user is the run's (`MemoryScope` in the run's `ToolEnv`,
built from `RunPolicy.user`), so a prompt asking for "Sam's password" while running as
Priya searches Priya's facts and nobody else's. A run without a user is refused. Every
call and refusal is audited by the catalogue's wrapper, like any other tool.
"""

from __future__ import annotations

from typing import Any

from foreman.errors import ToolRefused
from foreman.settings import Settings, get_settings
from foreman.tools.memory.scope import MemoryScope

MAX_QUERY_CHARS = 500
MAX_CONTENT_CHARS = 1_000
MAX_K = 20


def _user(tool: str, scope: MemoryScope) -> str:
    if not scope.user:
        raise ToolRefused(tool, "this run has no user, and memory is kept per user; "
                                "start it for a user (`foreman chat --user NAME`, or the flow's `user` parameter)")
    return scope.user


def _settings(scope: MemoryScope) -> Settings:
    settings = get_settings()
    return settings if scope.home is None else settings.model_copy(update={"home": scope.home})


def remember(scope: MemoryScope, content: str) -> dict[str, Any]:
    """Keep one fact about the run's user; the same fact again is kept once."""
    user = _user("remember", scope)
    if not content.strip():
        raise ToolRefused("remember", "nothing to remember; give the fact in one sentence")
    if len(content) > MAX_CONTENT_CHARS:
        raise ToolRefused("remember", f"the fact has {len(content)} characters; use at most {MAX_CONTENT_CHARS}")
    from foreman.tools.memory.service import remember as keep  # numpy, SQLite: only when called

    fact, created = keep(user, content, source_thread=scope.thread, settings=_settings(scope))
    return {"id": fact.id, "stored": "new" if created else "already remembered", "fact": fact.content}


def recall(scope: MemoryScope, query: str, k: int = 5) -> list[dict[str, Any]]:
    """The run's user's facts most relevant to `query`, best first."""
    user = _user("recall", scope)
    if not query.strip():
        raise ToolRefused("recall", "the query is empty; say what to look for in a few words")
    if len(query) > MAX_QUERY_CHARS:
        raise ToolRefused("recall", f"the query has {len(query)} characters; use at most {MAX_QUERY_CHARS}")
    if not 1 <= k <= MAX_K:
        raise ToolRefused("recall", f"k must be between 1 and {MAX_K}, not {k}")
    from foreman.tools.memory.service import recall as find

    return [{"id": f.id, "fact": f.content, "source": _source(f.source_thread, f.source_turn)}
            for f in find(user, query, k, settings=_settings(scope))]


def forget(scope: MemoryScope, memory_id: int) -> str:
    """Delete one of the run's user's facts by the id `recall` showed."""
    user = _user("forget", scope)
    from foreman.tools.memory.service import forget as drop

    if not drop(user, memory_id, settings=_settings(scope)):
        raise ToolRefused("forget", f"there is no memory #{memory_id} for this user; `recall` lists their ids")
    return f"forgot memory #{memory_id}"


def _source(thread: str | None, turn: int | None) -> str:
    if thread is None:
        return "remembered directly"
    return f"thread {thread}" + (f", turn #{turn}" if turn is not None else "")


# --- built for one run by the catalogue (`tools/catalog.py`) --------------------------


def make_remember(env: Any) -> Any:
    def remember_fact(content: str) -> dict:
        """Remember one durable fact or preference about the user (one sentence), for later conversations."""
        return remember(env.memory, content)

    remember_fact.__name__ = "remember"
    return remember_fact


def make_recall(env: Any) -> Any:
    def recall_facts(query: str, k: int = 5) -> list[dict]:
        """Look up what you remember about the user: facts and preferences relevant to `query`."""
        return recall(env.memory, query, k)

    recall_facts.__name__ = "recall"
    return recall_facts


def make_forget(env: Any) -> Any:
    def forget_fact(memory_id: int) -> str:
        """Forget one remembered fact about the user, by the id `recall` showed."""
        return forget(env.memory, memory_id)

    forget_fact.__name__ = "forget"
    return forget_fact
