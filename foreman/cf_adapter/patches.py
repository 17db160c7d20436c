"""Fixes for ControlFlow 0.12.1 on Prefect 3.8, each checked against the shape it expects.

1. **Choice results crash under Prefect.** ControlFlow stores choice results
   (`result_type=["a", "b"]`, a tuple or a Literal) as `Labels`, a pydantic RootModel whose
   `__iter__` yields the choices. Prefect >= 3.3 walks task parameters with
   `visit_collection`, which calls `dict(model)` on every pydantic model; on `Labels` that
   unpacks the choices as if they were (key, value) pairs and crashes every choice task.
   `dict()` prefers a `keys()` method when one exists, so giving `Labels` the mapping view
   Prefect expects (its single field, `root`) fixes the walk without changing how
   ControlFlow iterates the choices.
2. **A task that succeeds on its last allowed call is marked failed.** ControlFlow's
   orchestrator checks `_llm_calls >= max_llm_calls` on its next loop without asking
   whether the task is still incomplete. A finished task's status is final, so
   `mark_failed` on a complete task is ignored.

Each patch refuses to apply to an unexpected shape (a ControlFlow that already has
`Labels.keys`, or no `Task.mark_failed`) with a message saying so. `tests/test_cf_adapter.py`
holds a canary per patch that runs the *unpatched* code and expects the bug: when a canary
fails, upstream fixed it and the patch can go.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from controlflow.tasks.task import Labels, Task

from foreman.errors import ConfigurationError

_originals: dict[str, Any] = {}


def _labels_keys(self: Labels) -> tuple[str, ...]:
    return ("root",)


def _labels_getitem(self: Labels, item: Any) -> Any:
    if isinstance(item, str) and item == "root":
        return self.root
    return self.root[item]


def _final_mark_failed(original: Callable[..., None]) -> Callable[..., None]:
    def mark_failed(self: Task, reason: str | None = None) -> None:
        if self.is_complete():
            return  # terminal states are terminal
        original(self, reason)

    mark_failed._foreman_original = original  # type: ignore[attr-defined]
    return mark_failed


def _refuse(what: str) -> ConfigurationError:
    return ConfigurationError(
        f"ControlFlow changed shape ({what}); Foreman's patch for it no longer fits. "
        "Install the pinned controlflow==0.12.1 (./install.sh does) or update foreman/cf_adapter/patches.py")


def apply_patches() -> None:
    """Apply both fixes once; idempotent; refuses an unexpected ControlFlow."""
    if _originals:
        return
    if "keys" in Labels.__dict__:
        raise _refuse("Labels already defines keys()")
    if "root" not in getattr(Labels, "model_fields", {}):
        raise _refuse("Labels has no root field")
    mark_failed = Task.__dict__.get("mark_failed")
    if not callable(mark_failed):
        raise _refuse("Task.mark_failed is missing")
    _originals["mark_failed"] = mark_failed
    _originals["labels_getitem"] = Labels.__dict__.get("__getitem__")
    Labels.keys = _labels_keys
    Labels.__getitem__ = _labels_getitem
    Task.mark_failed = _final_mark_failed(mark_failed)


def patches_applied() -> bool:
    return bool(_originals)


@contextmanager
def unpatched() -> Iterator[None]:
    """ControlFlow as shipped, for the canary tests only (not thread-safe: no runs meanwhile)."""
    applied = patches_applied()
    if applied:
        del Labels.keys
        Labels.__getitem__ = _originals.pop("labels_getitem")
        Task.mark_failed = _originals.pop("mark_failed")
    try:
        yield
    finally:
        if applied:
            apply_patches()
