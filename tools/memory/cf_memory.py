"""ControlFlow's `cf.Memory`, backed by Foreman's memory store and kept per user.

ControlFlow 0.12.1 gives a `Memory(key=..., instructions=...)` its `store_memory_<key>`,
`search_memories_<key>` and `delete_memory_<key>` tools through a `MemoryProvider`
(Chroma, LanceDB, Postgres upstream: none of them installed or offline here). This provider
keeps those memories in the same SQLite file as the memory tools, in namespace `cf:<key>`,
searched the same way (embeddings plus keywords). The user is never the program's to pick
per call: it is the provider's own (`ForemanMemoryProvider(user=...)`) or the run's
(`as_user`, which the chat flow sets), so a memory key is one memory per user. Every call
is audited like a tool call.

    from foreman.tools.memory.cf_memory import as_user, use_foreman_memory
    use_foreman_memory()                      # cf.Memory(...) now defaults to this provider
    with as_user("priya"):
        prefs = cf.Memory(key="prefs", instructions="The user's preferences")
        cf.run("Note that I like tea", memories=[prefs])
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import controlflow
from controlflow.memory.memory import MemoryProvider

from foreman.errors import ToolRefused
from foreman.tools.audit import AuditRecord, Stopwatch, audit_log, current_context
from foreman.tools.memory.scope import check_user

_user: ContextVar[str | None] = ContextVar("foreman_memory_user", default=None)


@contextmanager
def as_user(user: str) -> Iterator[str]:
    """`cf.Memory` calls in this block (this thread and the contexts copied from it) belong to `user`."""
    token = _user.set(check_user(user))
    try:
        yield _user.get() or user
    finally:
        _user.reset(token)


def namespace(key: str) -> str:
    return f"cf:{key}"


class ForemanMemoryProvider(MemoryProvider):
    """A `MemoryProvider` over Foreman's memory store; `user` pins one user, None reads the run's."""

    user: str | None = None

    def _whose(self, action: str) -> str:
        user = self.user or _user.get()
        if not user:
            raise ToolRefused(f"cf.Memory {action}", "no user for this memory; run it inside "
                                                     "`as_user(NAME)` or give ForemanMemoryProvider(user=NAME)")
        return check_user(user)

    def _audited(self, action: str, key: str, arguments: dict[str, Any], body: Any) -> Any:
        watch = Stopwatch()
        context = current_context()
        try:
            result = body()
        except ToolRefused as exc:
            outcome, detail, error = "refused", str(exc), exc
        except Exception as exc:  # noqa: BLE001  (audited, then re-raised unchanged)
            outcome, detail, error = "error", f"{type(exc).__name__}: {exc}", exc
        else:
            outcome, detail, error = "ok", str(result)[:500], None
        audit_log().record(AuditRecord(**context.model_dump(), tool=f"cf.Memory:{key}:{action}", arguments=arguments,
                                       outcome=outcome, detail=detail, duration_ms=watch.ms))
        if error is not None:
            raise error
        return result

    def add(self, memory_key: str, content: str) -> str:
        from foreman.tools.memory.service import remember

        def body() -> str:
            fact, _ = remember(self._whose("add"), content, namespace=namespace(memory_key))
            return str(fact.id)

        return self._audited("add", memory_key, {"content": content}, body)

    def delete(self, memory_key: str, memory_id: str) -> None:
        from foreman.tools.memory.service import forget

        def body() -> None:
            user = self._whose("delete")
            if not str(memory_id).isdigit() or not forget(user, int(memory_id), namespace=namespace(memory_key)):
                raise ToolRefused(f"cf.Memory {memory_key}", f"there is no memory {memory_id!r} in {memory_key!r}")

        self._audited("delete", memory_key, {"memory_id": memory_id}, body)

    def search(self, memory_key: str, query: str, n: int = 20) -> dict[str, str]:
        from foreman.tools.memory.service import recall

        def body() -> dict[str, str]:
            found = recall(self._whose("search"), query, n, namespace=namespace(memory_key))
            return {str(f.id): f.content for f in found}

        return self._audited("search", memory_key, {"query": query, "n": n}, body)


def use_foreman_memory() -> ForemanMemoryProvider:
    """Make Foreman's store the default provider of every `cf.Memory` created from now on."""
    provider = ForemanMemoryProvider()
    controlflow.defaults.memory_provider = provider
    return provider
