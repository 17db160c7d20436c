"""ControlFlow's internal names that Foreman depends on, in one place.

ControlFlow 0.12.1 names each task's completion tools after the task id
(`controlflow/tasks/task.py`: `mark_task_{id}_successful`, `mark_task_{id}_failed`) and
fails a task that ran out of model calls with a fixed reason
(`controlflow/orchestration/orchestrator.py`). Nothing documents either; `tests/test_cf_adapter.py`
checks both against the installed ControlFlow, so an upgrade that renames them fails there
first, not in a run.
"""

from __future__ import annotations

import re

COMPLETION_PREFIX = "mark_task_"
SUCCESS_SUFFIX = "_successful"
FAILURE_SUFFIX = "_failed"
COMPLETION_TOOL = re.compile(rf"^{COMPLETION_PREFIX}\w+({SUCCESS_SUFFIX}|{FAILURE_SUFFIX})$")
OUT_OF_CALLS_REASON = "Max LLM calls reached"


def is_completion_tool(name: str) -> bool:
    """Whether `name` is one of ControlFlow's per-task completion tools."""
    return bool(COMPLETION_TOOL.match(name))


def is_success_tool(name: str) -> bool:
    return name.startswith(COMPLETION_PREFIX) and name.endswith(SUCCESS_SUFFIX)


def is_failure_tool(name: str) -> bool:
    return name.startswith(COMPLETION_PREFIX) and name.endswith(FAILURE_SUFFIX)


def task_id_of(completion_tool: str) -> str:
    """The task id a success tool completes."""
    return completion_tool.removeprefix(COMPLETION_PREFIX).removesuffix(SUCCESS_SUFFIX)


def completion_words(name: str) -> str | None:
    """What a completion tool call means, in words for a log ("marked the task done"); None otherwise."""
    if is_success_tool(name):
        return "marked the task done"
    if is_failure_tool(name):
        return "marked the task failed"
    return None


def ran_out_of_calls(reason: str) -> bool:
    """Whether ControlFlow failed the task because its model-call budget ran out."""
    return OUT_OF_CALLS_REASON in reason
