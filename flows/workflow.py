"""Run a workflow file (Level 6): the user's scripts, agents and approval points, on the plan engine."""

from __future__ import annotations

import foreman  # noqa: F401  (offline env first: Prefect may load this file by path)

# isort: split

import time
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner

from foreman.agents.registry import registry
from foreman.engine.cf_runner import build_scope
from foreman.engine.executor import Budgets, RunStatus
from foreman.engine.store import run_store
from foreman.engine.workflow import Workflow, WorkflowError, load_workflow
from foreman.flows.planner import PlanRunResult, execute_plan, finish
from foreman.notifications import FAILURE_HOOKS
from foreman.settings import REPO_ROOT, get_settings
from foreman.tools.catalog import ToolEnv


@flow(name="run-workflow", task_runner=ThreadPoolTaskRunner(max_workers=8), log_prints=True, **FAILURE_HOOKS)
def run_workflow(path: str, params: dict[str, Any] | None = None, workspace: str | None = None,
                 allow_write: bool = False, max_llm_calls: int = 100, max_concurrency: int = 4,
                 resume: str | None = None, approval_timeout_s: int = 3600,
                 approve_in: Literal["ui", "terminal"] = "ui") -> PlanRunResult:
    """Load, validate and run the workflow file at `path` with this run's `params`.

    Nothing runs from an invalid file or with invalid params. A workflow that ends FAILED
    raises `RunFailed` (its `.result` keeps what finished)."""
    settings = get_settings()
    started = time.time()
    scope = build_scope(registry, [])
    workflow = load_workflow(path, scope, params)
    scope = scope.model_copy(update={"allowed_tools": workflow.tools})
    run_key = resume or str(FlowRunContext.get().flow_run.id)
    root = Path(workspace or workflow.workspace or settings.workspace).expanduser().resolve()
    env = ToolEnv.from_settings(settings, workspace=root, allow_write=allow_write)
    store = run_store()
    get_run_logger().info("workflow %s from %s: %s%s", workflow.name, workflow.path,
                          " -> ".join(workflow.plan.order),
                          f"; params {workflow.values}" if workflow.values else "")
    report = execute_plan(workflow.plan, run_key, env=env, scope=scope, settings=settings, store=store,
                          budgets=Budgets(max_llm_calls=max_llm_calls, max_replans=0,
                                          max_concurrency=max_concurrency),
                          approval_timeout_s=approval_timeout_s, approve_in=approve_in, script_base=workflow.folder)
    store.record_run(run_key, workflow.name, report.status.value, report.stopped_by,
                     report.plan.model_dump(mode="json"), [], started, time.time() - started,
                     f"workflow {workflow.name}: {report.status.value}")
    statuses = {i: o.status for i, o in report.outcomes.items()}
    answer = (f"workflow {workflow.name} {report.status.value}"
              + (f" (stopped by {report.stopped_by})" if report.stopped_by else ""))
    return finish(PlanRunResult(objective=workflow.name, status=report.status, answer=answer,
                         stopped_by=report.stopped_by, run_key=run_key, plan=report.plan, results=report.results,
                         statuses=statuses, reused=report.reused, llm_calls=report.usage.llm_calls,
                         tokens=report.usage.tokens, duration_s=time.time() - started))


def prefect_schedules(workflow: Workflow, *, active: bool) -> list[Any]:
    """The workflow file's schedule as Prefect schedules (none if the file has none)."""
    from datetime import timedelta

    from prefect.schedules import Cron, Interval

    sched = workflow.schedule
    if sched is None:
        return []
    if sched.cron:
        return [Cron(sched.cron, timezone=sched.timezone, active=active)]
    return [Interval(timedelta(seconds=sched.interval_s or 0), timezone=sched.timezone, active=active)]


def deployment_parameters(path: str | Path, params: dict[str, Any] | None = None) -> tuple[Workflow, dict[str, Any]]:
    """The loaded workflow and the parameters its deployment starts runs with.

    The params form is prefilled with the file's defaults (and `params`), so a person
    editing a run in the UI sees every value. A scheduled workflow needs a value for each
    required param: nobody is there to type it at 3 a.m.
    """
    workflow = load_workflow(path, build_scope(registry, []), params, require_params=False)
    values = {**workflow.defaults, **{k: workflow.values[k] for k in (params or {})}}
    missing = [name for name in workflow.params if name not in values]
    if missing and workflow.schedule is not None:
        raise WorkflowError(workflow.path, [
            f"params.{name}: required, and the schedule starts runs with nobody to give it; give it a "
            f"default in the file or deploy with `--param {name}=VALUE`" for name in missing])
    return workflow, {"path": str(workflow.path), **({"params": values} if workflow.params else {})}


def deploy_workflow(path: str | Path, *, work_pool: str = "foreman", paused: bool = False,
                    params: dict[str, Any] | None = None) -> str:
    """Create or update the deployment `run-workflow/<name>` for a workflow file, with the file's schedule.

    The worker runs it from this checkout (like `prefect deploy --all` does for prefect.yaml),
    so a user's own workflow folder needs no entry in prefect.yaml. Returns the deployment id.
    """
    workflow, parameters = deployment_parameters(path, params)
    schedules = prefect_schedules(workflow, active=not paused)
    source = run_workflow.from_source(source=str(REPO_ROOT), entrypoint="flows/workflow.py:run_workflow")
    deployment_id = source.deploy(
        name=workflow.name, work_pool_name=work_pool, parameters=parameters,
        description=workflow.description or f"workflow {workflow.path}", tags=["foreman", "workflow"],
        schedules=schedules, build=False, push=False, print_next_steps=False,
    )
    return str(deployment_id)


__all__ = ["RunStatus", "deploy_workflow", "deployment_parameters", "prefect_schedules", "run_workflow"]
