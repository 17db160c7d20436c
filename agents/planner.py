"""The planner agent (Level 7): turns an objective into a `Plan`, and repairs or revises it.

It is a ControlFlow task whose result type is a draft plan whose agent and tool fields
are enums of the registry's agents and the flow's tools, so a model that decodes under
the schema (the embedded one does) cannot invent them. Validation still checks
everything: an invalid draft goes back to the planner with the exact errors, a
bounded number of times.
"""

from __future__ import annotations

import re
import textwrap
from enum import Enum
from typing import Any, Literal, Union

import controlflow as cf
from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, Field, create_model

from foreman.agents.registry import AgentRegistry
from foreman.cf_adapter.taskrun import run_task
from foreman.engine.executor import ReplanRequest
from foreman.engine.plan import ID_PATTERN, Plan, ResultKind, SubTask
from foreman.engine.store import PastRun
from foreman.engine.validate import PlanInvalid, PlanScope, ValidPlan, validate_plan
from foreman.errors import PlanningFailed
from foreman.tools.audit import AuditLog
from foreman.tools.catalog import CATALOG

PLANNER_INSTRUCTIONS = """\
You are a planner. Break the objective into a small graph of sub-tasks that agents can do.
- Use as few sub-tasks as the objective needs (often 1 to 4). Each has a short snake_case id.
- Give each sub-task to the agent whose description fits, and grant only the tools it needs.
- depends_on lists the ids whose results a sub-task needs; sub-tasks without dependencies run in parallel.
- A condition (optional) is an expression over results of sub-tasks it depends on, e.g. `count > 3`.
- Set approval true on a step that changes things a person cares about (writes files, runs code, sends).
- Explain the breakdown in one or two sentences in the rationale.
"""




class PlanAttempt(BaseModel):
    plan: Plan | None
    errors: list[str] = Field(default_factory=list)


class PlanningOutcome(BaseModel):
    valid: ValidPlan
    attempts: list[PlanAttempt]

    @property
    def repaired(self) -> bool:
        return len(self.attempts) > 1


def draft_schema(scope: PlanScope, max_tasks: int | None = None) -> type[BaseModel]:
    """The result type the planner fills: agents and tools as enums, arrays capped."""
    agent_enum = Enum("AgentName", {name: name for name in scope.agents}, type=str)
    tool_names = [t for t in scope.allowed_tools if t in scope.tools]
    tool_enum = Enum("ToolName", {name: name for name in tool_names}, type=str) if tool_names else str
    draft_task = create_model(
        "DraftTask",
        id=(str, Field(pattern=ID_PATTERN, max_length=40)),
        title=(str, Field(max_length=80)),
        instructions=(str, Field(max_length=600)),
        agent=(agent_enum, ...),
        tools=(list[tool_enum], Field(default_factory=list, max_length=4)),
        depends_on=(list[str], Field(default_factory=list, max_length=5)),
        result=(ResultKind, ResultKind.TEXT),
        condition=(str | None, None),
        approval=(bool, Field(default=False, description="true: a person approves before this step runs")),
    )
    return create_model(
        "DraftPlan",
        rationale=(str, Field(max_length=400)),
        tasks=(list[draft_task], Field(min_length=1, max_length=max_tasks or scope.max_nodes)),
    )


def strict_draft_schema(scope: PlanScope, max_tasks: int = 3) -> type[BaseModel]:
    """A draft schema in which an invalid plan cannot be written, for models that decode under it.

    Ids are fixed (step1, step2, ...) and listed in order; a step may depend only on
    steps before it (no cycles, no unknown ids); each step is one variant per agent,
    whose tools are that agent's tools allowed in this flow (no out-of-scope grant).
    Conditions are left out, and strings are short: a small model pads strings to their
    limit, and the whole plan must fit in one reply (512 tokens by default). The price is
    expressiveness, so it is used for small local models; capable models get `draft_schema`.
    """
    ids = [f"step{i}" for i in range(1, max_tasks + 1)]

    def step_type(k: int) -> Any:
        variants = []
        for agent, info in scope.agents.items():
            tools = tuple(t for t in info.tools if t in scope.allowed_tools and t in scope.tools)
            earlier = tuple(ids[:k])
            variants.append(create_model(
                f"Step{k + 1}By{agent.title().replace('-', '')}",
                id=(Literal[ids[k]], ids[k]),
                title=(str, Field(max_length=40)),
                instructions=(str, Field(max_length=120)),
                agent=(Literal[agent], ...),
                tools=(list[Literal[tools]], Field(default_factory=list, max_length=len(tools)))
                if tools else (list[str], Field(default_factory=list, max_length=0)),
                depends_on=(list[Literal[earlier]], Field(default_factory=list, max_length=k))
                if earlier else (list[str], Field(default_factory=list, max_length=0)),
                result=(ResultKind, ResultKind.TEXT),
            ))
        return Union[tuple(variants)]  # noqa: UP007  (built at run time)

    steps = [step_type(k) for k in range(max_tasks)]
    shapes = tuple(tuple[tuple(steps[: n + 1])] for n in range(max_tasks))
    return create_model(
        "DraftPlan",
        rationale=(str, Field(max_length=120)),
        tasks=(Union[shapes], ...),  # noqa: UP007  (built at run time)
    )


# a title that names nothing: a copied task id ("6d9d0794"), the step's own id, no letters
_MEANINGLESS_TITLE = re.compile(r"(?=\D*\d)[0-9a-f]{6,}|step\d*|[^A-Za-z]*", re.IGNORECASE)


def readable_title(title: str, instructions: str, max_length: int = 80) -> str:
    """`title`, or the start of `instructions` when the title names nothing.

    The 1.5B sometimes copies ControlFlow's task id into a step's title; the UI and the
    explanation show titles, so Python mends it instead of spending a repair call."""
    if not _MEANINGLESS_TITLE.fullmatch(title.strip()) or not instructions.strip():
        return title
    first = re.split(r"(?<=[.!?])\s", instructions.strip(), maxsplit=1)[0].rstrip(".!?")
    return textwrap.shorten(first, max_length, placeholder="…")


def to_plan(draft: Any, objective: str) -> Plan:
    """Draft (enum-typed) -> Plan (plain data). Pydantic errors here are validation errors too."""
    data = draft.model_dump(mode="json") if isinstance(draft, BaseModel) else dict(draft)
    tasks = []
    for step in data.get("tasks", []):
        fields = {k: v for k, v in step.items() if v is not None}
        if isinstance(fields.get("title"), str) and isinstance(fields.get("instructions"), str):
            fields["title"] = readable_title(fields["title"], fields["instructions"])
        tasks.append(SubTask(**fields))
    return Plan(objective=objective, rationale=data.get("rationale", ""), tasks=tasks)


def catalogue(scope: PlanScope, agents: AgentRegistry) -> dict[str, Any]:
    """What the planner is shown about agents and tools."""
    return {
        "agents": [
            {"name": s.name, "description": s.description, "capabilities": s.capabilities, "may_use_tools": s.tools}
            for s in agents.specs() if s.name in scope.agents
        ],
        "tools": [{"name": n, "does": CATALOG[n].summary} for n in scope.allowed_tools if n in CATALOG],
    }


class Planner:
    """Writes, repairs and revises plans with one ControlFlow agent."""

    def __init__(self, scope: PlanScope, agents: AgentRegistry, model: BaseChatModel, audit: AuditLog,
                 *, max_repairs: int = 2, max_llm_calls: int = 4, strict: bool = False) -> None:
        self.scope = scope
        self.schema = strict_draft_schema(scope) if strict else draft_schema(scope)
        self.agents = agents
        self.audit = audit
        self.max_repairs = max_repairs
        self.max_llm_calls = max_llm_calls
        self.agent = cf.Agent(name="planner", description="Plans sub-task graphs.",
                              instructions=PLANNER_INSTRUCTIONS, model=model, tools=[])

    def _draft(self, objective: str, context: dict[str, Any], title: str) -> Plan:
        task = cf.Task(
            objective=title,
            name="plan",
            result_type=self.schema,
            context={"objective": objective, **catalogue(self.scope, self.agents), **context},
            agents=[self.agent],
        )
        draft = run_task(task, audit=self.audit, max_llm_calls=self.max_llm_calls)
        return to_plan(draft, objective)

    def plan(self, objective: str, *, parameters: dict[str, Any] | None = None,
             lessons: list[PastRun] | None = None, passages: str | None = None) -> PlanningOutcome:
        """A valid plan for `objective`, repaired up to `max_repairs` times, or `PlanningFailed`.

        `passages`: what grounding already found for the objective, so the plan covers only
        what is still missing."""
        attempts: list[PlanAttempt] = []
        context: dict[str, Any] = {"parameters": parameters or {},
                                   "lessons_from_similar_past_runs": [l.model_dump() for l in lessons or []]}
        if passages:
            context["found_before_planning"] = passages
        title = f"Write a plan for this objective: {objective}"
        for _ in range(1 + self.max_repairs):
            try:
                plan = self._draft(objective, context, title)
                valid = validate_plan(plan, self.scope)
            except PlanInvalid as exc:
                errors = [str(e) for e in exc.errors]
                attempts.append(PlanAttempt(plan=plan, errors=errors))
                context["previous_plan"] = plan.model_dump(mode="json", exclude={"objective"})
            except Exception as exc:  # noqa: BLE001  (malformed output: tell the planner, try again)
                errors = [f"{type(exc).__name__}: {exc}"]
                attempts.append(PlanAttempt(plan=None, errors=errors))
            else:
                attempts.append(PlanAttempt(plan=plan))
                return PlanningOutcome(valid=valid, attempts=attempts)
            context["errors_to_fix"] = errors
            title = f"Repair the previous plan for this objective, fixing every listed error: {objective}"
        raise PlanningFailed(attempts[-1].errors, len(attempts))

    def replan(self, request: ReplanRequest) -> Plan:
        """New sub-tasks for the remaining work after a failure; finished ones are given, not redone."""
        context = {
            "finished_results": request.finished,
            "failed_subtask": request.failed,
            "error": request.error,
            "current_plan": request.plan.model_dump(mode="json", exclude={"objective"}),
            "rule": "Return only the sub-tasks still to do. Do not reuse ids of finished sub-tasks; "
                    "you may depend on them.",
        }
        title = f"Sub-task {request.failed} failed. Revise the remaining plan for: {request.objective}"
        return self._draft(request.objective, context, title)
