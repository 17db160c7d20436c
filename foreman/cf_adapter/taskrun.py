"""Run one ControlFlow task the way every Foreman step runs: audited, logged, honest about failure.

ControlFlow's `Task.run()` returns None without raising when `max_llm_calls` ends a
run, leaving the task RUNNING. A step that did not succeed must never pass for a
step that produced an empty result, so `run_task` raises `TaskNotCompleted` unless
the task is SUCCESSFUL.
"""

from __future__ import annotations

import logging
from typing import Any

import controlflow as cf
from controlflow.events.history import InMemoryHistory
from controlflow.orchestration.handler import Handler

from foreman import cf_adapter
from foreman.cf_adapter.handlers import AuditHandler, RunLogHandler
from foreman.cf_adapter.names import ran_out_of_calls
from foreman.errors import TaskNotCompleted
from foreman.tools.audit import AuditLog

logger = logging.getLogger("foreman.run")




def private_flow(name: str | None = None, tools: list | None = None, **kwargs: Any) -> cf.Flow:
    """A ControlFlow flow with its own history.

    ControlFlow's default history is one process-wide dict that keeps every event of
    every task forever; a worker that runs all the time would grow without bound, and
    concurrent steps would share (and race on) it.
    """
    return cf.Flow(name=name, tools=tools or [], history=InMemoryHistory(history={}), **kwargs)


def run_task(
    task: cf.Task,
    *,
    audit: AuditLog,
    max_llm_calls: int | None = None,
    flow: cf.Flow | None = None,
    extra_handlers: list[Handler] | None = None,
) -> Any:
    """Run `task` to completion and return its result, or raise `TaskNotCompleted`.

    `max_llm_calls` caps the task's own model calls (ControlFlow's `Task.max_llm_calls`),
    so that a budget holds for this task whatever the orchestrator's default is.
    """
    cf_adapter.apply()
    if max_llm_calls is not None:
        task.max_llm_calls = max_llm_calls
    if flow is None:
        from controlflow.flows import get_flow

        flow = get_flow() or private_flow(name=task.name)
    task.run(
        flow=flow,
        max_llm_calls=max_llm_calls,
        handlers=[AuditHandler(audit), RunLogHandler(), *(extra_handlers or [])],
        raise_on_failure=False,
    )
    if task.is_successful():
        return task.result
    limit = max_llm_calls or task.max_llm_calls
    out_of_calls = (
        f"the agent stopped without completing it (model-call budget of {limit} used up); "
        "raise the budget or use a more capable model (FOREMAN_MODEL)"
    )
    if task.is_failed():
        reason = str(task.result or "the agent marked it failed")
        # ControlFlow's own wording when Task.max_llm_calls ends it
        raise TaskNotCompleted(task.friendly_name(), task.status.value,
                               out_of_calls if ran_out_of_calls(reason) else reason)
    raise TaskNotCompleted(task.friendly_name(), task.status.value, out_of_calls)


def run_step(task: cf.Task, *, audit: AuditLog, max_llm_calls: int | None = None, flow: cf.Flow | None = None) -> Any:
    """`run_task` inside a Prefect task run named after the task, so the UI shows each step.

    The ControlFlow objects are passed `quote`d: Prefect must not walk them looking for
    futures (that walk is slow and races with other threads).
    """
    from prefect import task as prefect_task
    from prefect.cache_policies import NONE
    from prefect.utilities.annotations import quote

    @prefect_task(name=task.name or "step", cache_policy=NONE, persist_result=False)
    def step(quoted_task: Any, quoted_flow: Any) -> Any:
        return run_task(quoted_task, audit=audit, max_llm_calls=max_llm_calls, flow=quoted_flow)

    return step(quote(task), quote(flow))
