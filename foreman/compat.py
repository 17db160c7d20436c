"""Fixes for ControlFlow 0.12.1 on Prefect 3.8, applied once on import.

ControlFlow stores choice results (`result_type=["a", "b"]`, a tuple or a Literal) as
`Labels`, a pydantic RootModel whose `__iter__` yields the choices. Prefect >= 3.3
walks task parameters with `visit_collection`, which calls `dict(model)` on every
pydantic model; on `Labels` that unpacks the choices as if they were (key, value)
pairs and crashes every choice task. `dict()` prefers a `keys()` method when one
exists, so giving `Labels` the mapping view Prefect expects (its single field,
`root`) fixes the walk without changing how ControlFlow iterates the choices.

Second: when a task succeeds on exactly its last allowed model call, ControlFlow's
orchestrator checks `_llm_calls >= max_llm_calls` on its next loop without asking
whether the task is still incomplete, and marks the *successful* task failed. A
finished task's status is final, so `mark_failed` on a complete task is ignored.
"""

from __future__ import annotations

from typing import Any

import controlflow  # noqa: F401  (ensures ControlFlow's own settings load first)
from controlflow.tasks.task import Labels, Task


def _keys(self: Labels) -> tuple[str, ...]:
    return ("root",)


def _getitem(self: Labels, item: Any) -> Any:
    if isinstance(item, str) and item == "root":
        return self.root
    return self.root[item]


_original_mark_failed = Task.mark_failed


def _mark_failed(self: Task, reason: str | None = None) -> None:
    if self.is_complete():
        return  # terminal states are terminal
    _original_mark_failed(self, reason)


def patch_controlflow() -> None:
    """Idempotent."""
    if getattr(Labels, "_foreman_patched", False):
        return
    Labels.keys = _keys
    Labels.__getitem__ = _getitem
    Labels._foreman_patched = True
    Task.mark_failed = _mark_failed


patch_controlflow()


def _apply_speedups() -> None:
    from foreman.settings import get_settings
    from foreman.speedups import apply_speedups

    stock = get_settings().cf_task_runs
    apply_speedups(nested_task_runs=stock, artifacts=stock, flow_heartbeat_join=stock)


_apply_speedups()
