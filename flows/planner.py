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
from typing import Literal

import controlflow as cf
from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner

from foreman.agents.models import build_chat_model, describe_model, uses_embedded_model
from foreman.agents.planner import Planner, PlanningOutcome
from foreman.agents.registry import registry
from foreman.cf_adapter.taskrun import run_task
from foreman.engine.cf_runner import build_scope
from foreman.engine.plan import Plan
from foreman.engine.policy import RunPolicy, tool_env
from foreman.engine.records import Budgets, RunReport, RunStatus
from foreman.engine.runs import PlanRunResult, execute_plan, finish, result_of, run_key_for
from foreman.engine.store import RunStore, run_store
from foreman.engine.validate import PlanScope, ValidPlan, validate_plan
from foreman.errors import TaskNotCompleted
from foreman.flows.approval import approver_for
from foreman.notifications import FAILURE_HOOKS
from foreman.settings import Settings, get_settings
from foreman.tools.catalog import ToolEnv


def make_planner(scope: PlanScope, settings: Settings, env: ToolEnv) -> Planner:
    """The embedded model writes plans under the strict schema, where invalid plans cannot be written."""
    local = uses_embedded_model(settings)
    return Planner(scope, registry, build_chat_model(settings), env.audit, strict=local,
                   max_llm_calls=2 if local else 4)


def plan_objective(objective: str, *, allowed_tools: list[str] | None = None, allow_write: bool = False,
                   allow_code: bool = False, workspace: str | None = None) -> PlanningOutcome:
    """Plan without running (what `foreman plan` shows)."""
    settings = get_settings()
    policy = RunPolicy.build(settings=settings, workspace=workspace, allowed_tools=allowed_tools,
                             allow_write=allow_write, allow_code=allow_code)
    env = tool_env(policy, settings)
    scope = build_scope(registry, policy)
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
    policy = RunPolicy.build(settings=settings, workspace=workspace, allowed_tools=allowed_tools,
                             allow_write=allow_write, allow_code=allow_code)
    env = tool_env(policy, settings)
    scope = build_scope(registry, policy)
    store = run_store()
    run_key = run_key_for(resume, str(FlowRunContext.get().flow_run.id), store)
    planner = make_planner(scope, settings, env)

    valid, repaired = _get_plan(objective, plan, run_key, store, planner, scope)
    log.info("plan: %s", " | ".join(f"{t.id}<-{','.join(t.depends_on) or '-'}" for t in valid.plan.tasks))
    store.record_run(run_key, objective, RunStatus.RUNNING.value, None, valid.plan.model_dump(mode="json"), [],
                     started, 0.0, "running")

    budgets = Budgets(max_llm_calls=max_llm_calls, max_tokens=max_tokens, max_wall_s=max_wall_s,
                      max_replans=max_replans, max_concurrency=max_concurrency)
    report = execute_plan(valid, run_key, policy=policy, env=env, scope=scope, agents=registry, settings=settings,
                          store=store, budgets=budgets, replanner=planner.replan,
                          approver=approver_for(approve_in, env.audit, approval_timeout_s))

    answer = synthesize(objective, report, settings, env)
    summary = _summary(report)
    store.record_run(run_key, objective, report.status.value, report.stopped_by,
                     report.plan.model_dump(mode="json"),
                     [r.model_dump(mode="json") for r in report.revisions], started, time.time() - started, summary)
    return finish(result_of(report, objective=objective, answer=answer, started=started, repaired_plan=repaired))


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
