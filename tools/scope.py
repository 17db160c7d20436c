"""Tool scope at three levels, as ControlFlow does it, and the audit of calls outside it.

A tool given to the flow may be used by every agent in it; a tool given to an agent,
by that agent anywhere; a tool given to a task, only while that task runs. ControlFlow
binds exactly that union to each turn and answers a call to anything else with
"There is no tool called …", without running it. `AuditHandler` makes those refusals
visible: it records each one in the audit log with what *was* in scope.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from controlflow.events.base import Event
from controlflow.orchestration.handler import Handler
from pydantic import BaseModel

from foreman.tools.audit import AuditLog, AuditRecord, current_context


class EffectiveScope(BaseModel):
    """The tools one agent may call in one task, and where each grant comes from."""

    flow: list[str]
    agent: list[str]
    task: list[str]

    @property
    def names(self) -> list[str]:
        seen: dict[str, None] = {}
        for name in [*self.flow, *self.agent, *self.task]:
            seen.setdefault(name, None)
        return list(seen)


def _names(tools: Iterable[Any]) -> list[str]:
    return [getattr(t, "name", None) or getattr(t, "__name__", str(t)) for t in tools]


def effective_scope(flow: Any, agent: Any, task: Any) -> EffectiveScope:
    """What `agent` may call while running `task` inside ControlFlow `flow` (completion tools aside)."""
    return EffectiveScope(
        flow=_names(flow.tools if flow is not None else []),
        agent=_names(agent.get_tools()),
        task=_names(task.get_tools()),
    )


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
