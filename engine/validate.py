"""Validate a plan before anything runs. Pure Python: no model, no Prefect.

Every error names the sub-task and the field, and says what would fix it, because
the same list goes back to the planner for repair and, failing that, to the user.
"""

from __future__ import annotations

from collections import Counter
from graphlib import CycleError, TopologicalSorter

from pydantic import BaseModel, Field

from foreman.engine.conditions import ConditionError, parse_condition
from foreman.engine.eligibility import AgentInfo, eligible_agents, why_nobody
from foreman.engine.plan import Plan, ResultKind
from foreman.engine.policy import RunPolicy
from foreman.errors import PlanInvalid
from foreman.tools.catalog import CATALOG


class PlanScope(BaseModel):
    """What a plan may use: the agents, the run's policy (tools, approvals), the limits."""

    agents: dict[str, AgentInfo]
    policy: RunPolicy
    schemas: list[str] = Field(default_factory=list, description="Named result schemas.")
    max_nodes: int = 25
    max_depth: int = 10
    scripts_from_file: bool = Field(
        default=False, description="The plan is a workflow file the person wrote, so its script steps run "
        "as written; a plan from anywhere else (the planner, a flow parameter) needs allow_code for one.")

    @property
    def tools(self) -> list[str]:
        """Every tool in the catalogue."""
        return list(CATALOG)

    @property
    def allowed_tools(self) -> list[str]:
        """Tools this run allows sub-tasks to be granted."""
        return list(self.policy.allowed_tools)

    @property
    def approval_tools(self) -> list[str]:
        """A step that may use any of these tools always waits for a person."""
        return list(self.policy.approval_tools)


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
    if len(plan.tasks) > scope.max_nodes:  # first and alone: the checks below grow with the plan
        err(None, "tasks", f"{len(plan.tasks)} sub-tasks; the limit is {scope.max_nodes}: merge some")
        raise PlanInvalid(errors)

    ids = [t.id for t in plan.tasks]
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    for dup in duplicates:
        err(dup, "id", "this id is used by more than one sub-task; ids must be unique")
    known_ids = set(ids)

    for task in plan.tasks:
        # who does it, with what
        if task.script is not None:
            if not (scope.scripts_from_file or scope.policy.allow_code):
                err(task.id, "script", f"a script step runs {task.script.path!r} outside the sandbox, which is "
                                       "running code: only a workflow file, or a run that allows code "
                                       "(--allow-code / allow_code=True), may hold one")
            if task.agent or task.capability:
                err(task.id, "script", "a script step has no agent or capability; remove them or the script")
            if task.tools:
                err(task.id, "tools", "a script step gets no agent tools; remove them")
            if task.files:
                err(task.id, "files", "a script step is given no files (no agent reads them); pass the paths "
                                      "in script.args, or attach them to an agent step")
        for tool in task.tools:
            if not scope.policy.permits(tool):
                err(task.id, "tools", scope.policy.why_not(tool))
        if task.script is None:  # who may run it with the grants the policy allows (the rest erred above)
            probe = task.model_copy(update={"tools": [t for t in task.tools if scope.policy.permits(t)]})
            if not eligible_agents(probe, scope.agents):
                err(task.id, *why_nobody(probe, scope.agents))

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


def require_approvals(plan: Plan, scope: PlanScope) -> tuple[Plan, list[str]]:
    """Put an approval point before every step that may use a tool in `scope.approval_tools`.

    Done here, in validation, so that no way into the engine (planner, revision,
    workflow file) can run such a step unapproved.
    """
    guarded = set(scope.approval_tools)
    added = [t.id for t in plan.tasks
             if not t.approval and t.script is None and scope.policy.step_tools(t.tools) & guarded]
    if not added:
        return plan, []
    tasks = [t.model_copy(update={"approval": True}) if t.id in added else t for t in plan.tasks]
    return plan.model_copy(update={"tasks": tasks}), added
