"""ControlFlow event handlers Foreman installs on every step it runs.

- `AuditHandler`: a call to a tool that was not in the caller's scope never runs
  (ControlFlow answers "There is no tool called …"); this records each such refusal in
  the audit log with what *was* in scope, so no refusal leaves no trace.
- `RunLogHandler`: each agent turn in the Prefect run's log, as a person reads it:
  `researcher says: …`, `researcher → read_file("report.txt")`, `researcher marked the task
  done: …` (ControlFlow's completion tools in words), a tool's result as a short preview.
- `UsageCounter`: model calls and tokens of one step, for the run's budgets.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any

from controlflow.events.base import Event
from controlflow.orchestration.handler import Handler

from foreman.cf_adapter.names import completion_words, is_completion_tool
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


PREVIEW = 300  # characters of a message or result in one log line; the cut is always said


def preview(text: str, limit: int = PREVIEW) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def call_text(name: str, args: dict[str, Any]) -> str:
    """`read_file("report.txt")`, `search_files(query="backup", limit=3)`: a call as code reads."""
    values = [json.dumps(v, ensure_ascii=False, default=str) for v in args.values()]
    if len(args) == 1:
        inner = values[0]
    else:
        inner = ", ".join(f"{k}={v}" for k, v in zip(args, values, strict=True))
    return f"{name}({preview(inner, 200)})"


class RunLogHandler(Handler):
    """Writes each agent turn (what it says, which tools it calls, what they return) into the run's log."""

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
            self._log().info("%s says: %s", agent, preview(_text_of(message["content"]), 500))
        for call in message.get("tool_calls") or []:
            name, args = call.get("name") or "?", call.get("args") or {}
            words = completion_words(name)
            if words:
                said = next(iter(args.values()), "") if len(args) == 1 else args
                self._log().info("%s %s%s", agent, words, f": {preview(_text_of(said))}" if said else "")
            else:
                self._log().info("%s → %s", agent, call_text(name, args))

    def on_tool_result(self, event: Event) -> None:
        result = event.tool_result
        name = result.tool_call.get("name") or "?"
        if is_completion_tool(name) and not result.is_error:
            return  # "Task #8f88 marked successful": the call above said it
        if result.is_error:
            self._log().warning("%s refused or failed: %s", name, preview(result.str_result))
        else:
            self._log().info("  %s returned %s", name, preview(result.str_result))


def _text_of(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list (Anthropic-style blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p if isinstance(p, str) else str(p.get("text", "")) for p in content if p)
    return json.dumps(content, ensure_ascii=False, default=str)


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
