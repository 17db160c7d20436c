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
from controlflow.events.base import Event
from controlflow.events.history import InMemoryHistory
from controlflow.orchestration.handler import Handler

from foreman import compat  # noqa: F401
from foreman.errors import TaskNotCompleted
from foreman.tools.audit import AuditLog
from foreman.tools.scope import AuditHandler

logger = logging.getLogger("foreman.run")




def private_flow(name: str | None = None, tools: list | None = None, **kwargs: Any) -> cf.Flow:
    """A ControlFlow flow with its own history.

    ControlFlow's default history is one process-wide dict that keeps every event of
    every task forever; a worker that runs all the time would grow without bound, and
    concurrent steps would share (and race on) it.
    """
    return cf.Flow(name=name, tools=tools or [], history=InMemoryHistory(history={}), **kwargs)


class RunLogHandler(Handler):
    """Writes each agent turn's tool calls and results into the Prefect run's log."""

    def _log(self) -> logging.Logger | logging.LoggerAdapter:
        try:
            from prefect import get_run_logger

            return get_run_logger()
        except Exception:  # noqa: BLE001  (outside a Prefect run)
            return logger

    def on_agent_message(self, event: Event) -> None:
        message = event.message  # a dict in ControlFlow's events
        agent = getattr(event.agent, "name", "?")
        if message.get("content"):
            self._log().info("%s says: %s", agent, str(message["content"])[:500])
        for call in message.get("tool_calls") or []:
            self._log().info("%s calls %s(%s)", agent, call["name"], str(call["args"])[:300])

    def on_tool_result(self, event: Event) -> None:
        result = event.tool_result
        name = result.tool_call.get("name")
        text = result.str_result[:300]
        if result.is_error:
            self._log().warning("tool %s refused or failed: %s", name, text)
        else:
            self._log().info("tool %s returned: %s", name, text)


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
                               out_of_calls if "Max LLM calls reached" in reason else reason)
    raise TaskNotCompleted(task.friendly_name(), task.status.value, out_of_calls)


def run_step(
    task: cf.Task,
    *,
    audit: AuditLog,
    max_llm_calls: int | None = None,
    flow: cf.Flow | None = None,
    extra_handlers: list[Handler] | None = None,
) -> Any:
    """`run_task` inside a Prefect task run named after the task, so the UI shows each step.

    The ControlFlow objects are passed `quote`d: Prefect must not walk them looking for
    futures (that walk is slow and races with other threads).
    """
    from prefect import task as prefect_task
    from prefect.cache_policies import NONE
    from prefect.utilities.annotations import quote

    @prefect_task(name=task.name or "step", cache_policy=NONE, persist_result=False)
    def step(quoted_task: Any, quoted_flow: Any) -> Any:
        return run_task(quoted_task, audit=audit, max_llm_calls=max_llm_calls, flow=quoted_flow,
                        extra_handlers=extra_handlers)

    return step(quote(task), quote(flow))
