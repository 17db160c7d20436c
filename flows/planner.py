"""Plan and run (Level 7): an objective becomes a validated sub-task graph that runs on Prefect.

The planner agent writes the plan; the validator checks it (repairs go back to the
planner); the engine runs ready sub-tasks in parallel, retries, replans when a step
fails for good, stays within budgets, and keeps finished results so a re-run resumes.
Every step is explained as Prefect artifacts; the answer is synthesized at the end.
"""

from __future__ import annotations

import foreman  # noqa: F401  (offline env first: Prefect may load this file by path)

# isort: split

import time
from pathlib import Path
from typing import Any, Literal

import controlflow as cf
from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from foreman.agents.models import build_chat_model, describe_model, uses_embedded_model
from foreman.agents.planner import Planner, PlanningOutcome
from foreman.agents.registry import registry
from foreman.engine.cf_runner import ControlFlowRunner, build_scope
from foreman.engine.executor import Budgets, Engine, NodeStatus, RunReport, RunStatus
from foreman.engine.explain import ArtifactObserver
from foreman.engine.plan import Plan
from foreman.engine.store import RunStore, run_store
from foreman.engine.validate import PlanScope, ValidPlan, validate_plan
from foreman.errors import RunFailed
from foreman.flows.approval import PrefectApprover, TerminalApprover
from foreman.notifications import FAILURE_HOOKS
from foreman.settings import Settings, get_settings
from foreman.taskrun import TaskNotCompleted, run_task
from foreman.tools.catalog import ToolEnv

DEFAULT_ALLOWED_TOOLS = ["list_files", "read_file", "search_files", "fetch_url", "notify_user"]
FLOW_TOOLS = ["notify_user"]


class PlanRunResult(BaseModel):
    """What `plan_and_run` returns: the answer, and how it was reached."""

    objective: str
    status: RunStatus
    answer: str
    stopped_by: str | None = None
    run_key: str
    plan: Plan
    results: dict[str, Any] = Field(default_factory=dict)
    statuses: dict[str, NodeStatus] = Field(default_factory=dict)
    reused: list[str] = Field(default_factory=list)
    revisions: int = 0
    repaired_plan: bool = False
    llm_calls: int = 0
    tokens: int = 0
    duration_s: float = 0.0




def finish(result: PlanRunResult) -> PlanRunResult | State:
    """The flow's return value: a FAILED run becomes a Failed state (red in the UI, failure hooks
    and automations fire) that still carries the result, via `RunFailed.result`."""
    if result.status != RunStatus.FAILED:
        return result
    failed = [i for i, s in result.statuses.items() if s == NodeStatus.FAILED]
    why = result.stopped_by or (f"failed steps: {', '.join(failed)}" if failed else "failed")
    return Failed(message=f"{result.objective[:80]}: {why}"[:500], data=RunFailed(result))


def planning_scope(allowed_tools: list[str] | None, allow_write: bool, allow_code: bool) -> PlanScope:
    tools = list(allowed_tools or DEFAULT_ALLOWED_TOOLS)
    if allow_write and "write_file" not in tools:
        tools.append("write_file")
    if allow_code and "run_python" not in tools:
        tools.append("run_python")
    return build_scope(registry, tools)


def make_planner(scope: PlanScope, settings: Settings, env: ToolEnv) -> Planner:
    """The embedded model writes plans under the strict schema, where invalid plans cannot be written."""
    local = uses_embedded_model(settings)
    return Planner(scope, registry, build_chat_model(settings), env.audit, strict=local,
                   max_llm_calls=2 if local else 4)


def plan_objective(objective: str, *, allowed_tools: list[str] | None = None, allow_write: bool = False,
                   allow_code: bool = False, workspace: str | None = None) -> PlanningOutcome:
    """Plan without running (what `foreman plan` shows)."""
    settings = get_settings()
    env = ToolEnv.from_settings(settings, workspace=workspace)
    scope = planning_scope(allowed_tools, allow_write, allow_code)
    lessons = run_store().similar_runs(objective)
    return make_planner(scope, settings, env).plan(objective, lessons=lessons)


def synthesize(objective: str, report: RunReport, settings: Settings, env: ToolEnv) -> str:
    """One writer turn turns the sub-task results into the answer; without results, say what happened."""
    if not report.results:
        return f"No sub-task completed ({report.stopped_by or 'nothing ran'})."
    agent = cf.Agent(name="writer", instructions=registry.get("writer").instructions,
                     model=build_chat_model(settings, registry.get("writer").model), tools=[])
    task = cf.Task(f"Answer the objective from these results: {objective}", name="answer",
                   result_type=str, context={"results": report.results}, agents=[agent])
    try:
        return run_task(task, audit=env.audit, max_llm_calls=3)
    except TaskNotCompleted:
        # the answer step must not lose the results: fall back to listing them
        return "\n".join(f"{k}: {v}" for k, v in report.results.items())


@flow(name="plan-and-run", task_runner=ThreadPoolTaskRunner(max_workers=8), log_prints=True, **FAILURE_HOOKS)
def plan_and_run(
    objective: str,
    workspace: str | None = None,
    allowed_tools: list[str] | None = None,
    allow_write: bool = False,
    allow_code: bool = False,
    max_llm_calls: int = 60,
    max_tokens: int = 400_000,
    max_wall_s: float = 1800.0,
    max_replans: int = 2,
    max_concurrency: int = 4,
    resume: str | None = None,
    plan: Plan | None = None,
    approval_timeout_s: int = 3600,
    approve_in: Literal["ui", "terminal"] = "ui",
) -> PlanRunResult:
    """Plan `objective` into sub-tasks and run them; return the synthesized answer.

    A run that ends FAILED raises `RunFailed` (its `.result` keeps what finished).
    `resume` re-runs an earlier run (its run key) without redoing finished sub-tasks.
    `plan` skips planning and runs the given plan (the same format workflow files use).
    """
    log = get_run_logger()
    settings = get_settings()
    log.info(describe_model(settings))
    started = time.time()
    flow_run = FlowRunContext.get().flow_run
    run_key = resume or str(flow_run.id)
    root = Path(workspace or settings.workspace).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"workspace {str(root)!r} is not a folder; pass an existing folder")
    env = ToolEnv.from_settings(settings, workspace=root, allow_write=allow_write)
    scope = planning_scope(allowed_tools, allow_write, allow_code)
    store = run_store()
    planner = make_planner(scope, settings, env)

    valid, repaired = _get_plan(objective, plan, run_key, store, planner, scope)
    log.info("plan: %s", " | ".join(f"{t.id}<-{','.join(t.depends_on) or '-'}" for t in valid.plan.tasks))
    store.record_run(run_key, objective, RunStatus.RUNNING.value, None, valid.plan.model_dump(mode="json"), [],
                     started, 0.0, "running")

    budgets = Budgets(max_llm_calls=max_llm_calls, max_tokens=max_tokens, max_wall_s=max_wall_s,
                      max_replans=max_replans, max_concurrency=max_concurrency)
    report = execute_plan(valid, run_key, env=env, scope=scope, settings=settings, store=store, budgets=budgets,
                          replanner=planner.replan, approval_timeout_s=approval_timeout_s, approve_in=approve_in)

    answer = synthesize(objective, report, settings, env)
    summary = _summary(report)
    store.record_run(run_key, objective, report.status.value, report.stopped_by,
                     report.plan.model_dump(mode="json"),
                     [r.model_dump(mode="json") for r in report.revisions], started, time.time() - started, summary)
    return finish(PlanRunResult(
        objective=objective, status=report.status, answer=answer, stopped_by=report.stopped_by, run_key=run_key,
        plan=report.plan, results=report.results, statuses={i: o.status for i, o in report.outcomes.items()},
        reused=report.reused, revisions=len(report.revisions), repaired_plan=repaired,
        llm_calls=report.usage.llm_calls, tokens=report.usage.tokens, duration_s=time.time() - started,
    ))


def execute_plan(valid: ValidPlan, run_key: str, *, env: ToolEnv, scope: PlanScope, settings: Settings,
                 store: RunStore, budgets: Budgets, replanner: Any = None, approval_timeout_s: int = 3600,
                 approve_in: Literal["ui", "terminal"] = "ui",
                 script_base: Path | None = None) -> RunReport:
    """Run a validated plan inside the current flow run: the part plans and workflows share."""
    runner = ControlFlowRunner(env, registry, settings, flow_tools=FLOW_TOOLS, stats=store.agent_stats(),
                               script_base=script_base)
    engine = Engine(runner, scope, store, budgets, replanner=replanner, observer=ArtifactObserver(),
                    approver=TerminalApprover(env.audit) if approve_in == "terminal"
                    else PrefectApprover(env.audit, timeout_s=approval_timeout_s))
    report = engine.run(valid, run_key)
    if report.reused:
        get_run_logger().info("reused finished sub-tasks: %s", ", ".join(report.reused))
    return report


def _get_plan(objective: str, given: Plan | None, run_key: str, store: RunStore, planner: Planner,
              scope: PlanScope) -> tuple[ValidPlan, bool]:
    if given is not None:
        return validate_plan(given.model_copy(update={"objective": given.objective or objective}), scope), False
    stored = store.stored_plan(run_key)
    if stored is not None:  # resuming: the same graph, so finished sub-tasks match
        return validate_plan(Plan.model_validate(stored), scope), False
    outcome = planner.plan(objective, lessons=store.similar_runs(objective))
    return outcome.valid, outcome.repaired


def _summary(report: RunReport) -> str:
    parts = [f"{i}={o.status.value}" + (f" ({o.error[:80]})" if o.error else "") for i, o in report.outcomes.items()]
    tail = f"; stopped by {report.stopped_by}" if report.stopped_by else ""
    return f"{report.status.value}: " + ", ".join(parts) + tail + f"; revisions={len(report.revisions)}"
