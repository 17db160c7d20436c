"""ControlFlow event handlers Foreman installs on every step it runs.

- `AuditHandler`: a call to a tool that was not in the caller's scope never runs
  (ControlFlow answers "There is no tool called …"); this records each such refusal in
  the audit log with what *was* in scope, so no refusal leaves no trace.
- `RunLogHandler`: each agent turn's messages and tool calls in the Prefect run's log.
- `UsageCounter`: model calls and tokens of one step, for the run's budgets.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from controlflow.events.base import Event
from controlflow.orchestration.handler import Handler

from foreman.tools.audit import AuditLog, AuditRecord, current_context

if TYPE_CHECKING:
    from foreman.engine.records import Usage

logger = logging.getLogger("foreman.run")


class AuditHandler(Handler):
    """Records calls to tools that were not in the caller's scope (ControlFlow did not run them)."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def on_tool_result(self, event: Event) -> None:
        result = event.tool_result
        if result.tool is not None:
            return  # a tool in scope: its own wrapper has audited it
        call = result.tool_call
        context = current_context()
        in_scope = self._in_scope()
        self.log.record(
            AuditRecord(
                **context.model_dump(exclude={"agent"}),
                agent=context.agent or getattr(event.agent, "name", None),
                tool=call.get("name") or "(unnamed)",
                arguments=call.get("args") or {},
                outcome="refused",
                detail=(
                    f"not in scope: {call.get('name')!r} is not available to this agent in this task"
                    + (f"; available: {', '.join(in_scope)}" if in_scope else "")
                ),
            )
        )

    @staticmethod
    def _in_scope() -> list[str]:
        try:
            from controlflow.utilities.context import ctx

            orchestrator = ctx.get("orchestrator")
            if orchestrator is None:
                return []
            # the agent's own tools are added by ControlFlow at call time, after the
            # orchestrator's flow and task tools
            tools = [*orchestrator.agent.get_tools(), *orchestrator.get_tools()]
            return list(dict.fromkeys(t.name for t in tools))
        except Exception:  # noqa: BLE001  (best effort: the refusal itself is what matters)
            return []


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


class UsageCounter(Handler):
    """Counts model calls and tokens of one sub-task, for the run's budgets and summary."""

    def __init__(self, usage: Usage) -> None:
        self.usage = usage
        self._lock = threading.Lock()

    def on_agent_message(self, event: Event) -> None:
        meta = event.message.get("usage_metadata") or {}
        with self._lock:
            self.usage.llm_calls += 1
            self.usage.tokens += int(meta.get("total_tokens") or 0)
