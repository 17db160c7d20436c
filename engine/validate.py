"""Validate a plan before anything runs. Pure Python: no model, no Prefect.

Every error names the sub-task and the field, and says what would fix it, because
the same list goes back to the planner for repair and, failing that, to the user.
"""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter

from pydantic import BaseModel, Field

from foreman.engine.conditions import ConditionError, parse_condition
from foreman.engine.plan import Plan, ResultKind, SubTask
from foreman.errors import PlanInvalid


class AgentInfo(BaseModel):
    """What validation needs to know of an agent."""

    capabilities: list[str] = Field(default_factory=list)
    tools: list[str] = Field(default_factory=list, description="Tools this agent may be granted.")


class PlanScope(BaseModel):
    """What a plan may use: the agents, the tools the flow allows, the limits."""

    agents: dict[str, AgentInfo]
    tools: list[str] = Field(description="Every tool in the catalogue.")
    allowed_tools: list[str] = Field(description="Tools this flow allows sub-tasks to be granted.")
    schemas: list[str] = Field(default_factory=list, description="Named result schemas.")
    approval_tools: list[str] = Field(
        default_factory=list, description="A step that may use any of these tools always waits for a person."
    )
    max_nodes: int = 25
    max_depth: int = 10


class PlanError(BaseModel):
    task: str | None = None
    field: str | None = None
    message: str

    def __str__(self) -> str:
        where = ".".join(p for p in (self.task, self.field) if p)
        return f"{where}: {self.message}" if where else self.message




class ValidPlan(BaseModel):
    """A plan that passed validation, with its execution order and depth."""

    plan: Plan
    order: list[str]
    depth: int
    approvals_added: list[str] = Field(
        default_factory=list, description="Steps given an approval point because of `approval_tools`."
    )


def validate_plan(plan: Plan, scope: PlanScope) -> ValidPlan:
    """Return the plan with its order, or raise `PlanInvalid` listing every error."""
    errors: list[PlanError] = []

    def err(task: str | None, field: str | None, message: str) -> None:
        errors.append(PlanError(task=task, field=field, message=message))

    if not plan.tasks:
        err(None, "tasks", "the plan has no sub-tasks; add at least one")
    if len(plan.tasks) > scope.max_nodes:
        err(None, "tasks", f"{len(plan.tasks)} sub-tasks; the limit is {scope.max_nodes}: merge some")

    ids = [t.id for t in plan.tasks]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    for dup in duplicates:
        err(dup, "id", "this id is used by more than one sub-task; ids must be unique")
    known_ids = set(ids)
    known_agents = sorted(scope.agents)
    capabilities = sorted({c for a in scope.agents.values() for c in a.capabilities})

    for task in plan.tasks:
        # who does it
        candidates: list[str] = []
        if task.script is not None:
            if task.agent or task.capability:
                err(task.id, "script", "a script step has no agent or capability; remove them or the script")
            if task.tools:
                err(task.id, "tools", "a script step gets no agent tools; remove them")
        elif task.agent is None and task.capability is None:
            err(task.id, "agent", f"name an agent ({', '.join(known_agents)}) or a capability")
        elif task.agent is not None:
            if task.agent not in scope.agents:
                err(task.id, "agent", f"unknown agent {task.agent!r}; known agents: {', '.join(known_agents)}")
            else:
                candidates = [task.agent]
                if task.capability and task.capability not in scope.agents[task.agent].capabilities:
                    err(task.id, "capability", f"agent {task.agent!r} lacks capability {task.capability!r}")
        else:
            candidates = [n for n, a in scope.agents.items() if task.capability in a.capabilities]
            if not candidates:
                err(task.id, "capability", f"no agent has capability {task.capability!r}; known: {', '.join(capabilities)}")

        # with what
        for tool in task.tools:
            if tool not in scope.tools:
                err(task.id, "tools", f"unknown tool {tool!r}; known tools: {', '.join(sorted(scope.tools))}")
            elif tool not in scope.allowed_tools:
                err(task.id, "tools", f"tool {tool!r} is not allowed in this flow; allowed: {', '.join(sorted(scope.allowed_tools))}")
            elif candidates and not any(tool in scope.agents[c].tools for c in candidates):
                who = task.agent or f"any agent with capability {task.capability!r}"
                err(task.id, "tools", f"tool {tool!r} is outside the scope of {who}; give the sub-task to an agent that may use it")

        # after what
        for dep in task.depends_on:
            if dep == task.id:
                err(task.id, "depends_on", "a sub-task cannot depend on itself")
            elif dep not in known_ids:
                err(task.id, "depends_on", f"depends on unknown sub-task {dep!r}; ids are: {', '.join(ids)}")

        # under which condition
        if task.condition:
            try:
                condition = parse_condition(task.condition)
            except ConditionError as exc:
                err(task.id, "condition", str(exc))
            else:
                for name in sorted(condition.names - set(task.depends_on)):
                    hint = "add it to depends_on" if name in known_ids else f"ids are: {', '.join(ids)}"
                    err(task.id, "condition", f"reads {name!r}, which is not a sub-task it depends on; {hint}")

        # returning what
        if isinstance(task.result, str) and task.result not in {k.value for k in ResultKind} | set(scope.schemas):
            kinds = [k.value for k in ResultKind] + scope.schemas
            err(task.id, "result", f"unknown result type {task.result!r}; use one of {', '.join(kinds)}")

    order: list[str] = []
    depth = 0
    if not duplicates:
        graph = {t.id: {d for d in t.depends_on if d in known_ids and d != t.id} for t in plan.tasks}
        try:
            order = list(TopologicalSorter(graph).static_order())
        except CycleError as exc:
            cycle = exc.args[1]
            err(cycle[0], "depends_on", f"dependency cycle {' -> '.join(cycle)}; remove one of these dependencies")
        else:
            levels: dict[str, int] = {}
            for node in order:
                levels[node] = 1 + max((levels[d] for d in graph[node]), default=0)
            depth = max(levels.values(), default=0)
            if depth > scope.max_depth:
                err(None, "depends_on", f"the longest chain has {depth} sub-tasks; the limit is {scope.max_depth}")

    if errors:
        raise PlanInvalid(errors)
    plan, added = require_approvals(plan, scope)
    return ValidPlan(plan=plan, order=order, depth=depth, approvals_added=added)


def step_tools(task: SubTask, scope: PlanScope) -> set[str]:
    """Every tool the step could call: its own grants and the agent-level tools of whoever may run it."""
    if task.script is not None:
        return set()
    agents = [task.agent] if task.agent else [n for n, a in scope.agents.items() if task.capability in a.capabilities]
    return set(task.tools).union(*(scope.agents[a].tools for a in agents if a in scope.agents))


def require_approvals(plan: Plan, scope: PlanScope) -> tuple[Plan, list[str]]:
    """Put an approval point before every step that may use a tool in `scope.approval_tools`.

    Done here, in validation, so that no way into the engine (planner, revision,
    workflow file) can run such a step unapproved.
    """
    guarded = set(scope.approval_tools)
    added = [t.id for t in plan.tasks if not t.approval and step_tools(t, scope) & guarded]
    if not added:
        return plan, []
    tasks = [t.model_copy(update={"approval": True}) if t.id in added else t for t in plan.tasks]
    return plan.model_copy(update={"tasks": tasks}), added
