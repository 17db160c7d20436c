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
from foreman.engine.policy import RunPolicy, tool_env
from foreman.engine.records import Budgets, RunStatus
from foreman.engine.runs import PlanRunResult, execute_plan, finish, result_of, run_key_for
from foreman.engine.store import run_store
from foreman.engine.workflow import Workflow, WorkflowError, load_workflow
from foreman.flows.approval import approver_for
from foreman.notifications import FAILURE_HOOKS
from foreman.settings import REPO_ROOT, get_settings


@flow(name="run-workflow", task_runner=ThreadPoolTaskRunner(max_workers=8), log_prints=True, **FAILURE_HOOKS)
def run_workflow(path: str, params: dict[str, Any] | None = None, workspace: str | None = None,
                 allow_write: bool = False, allow_code: bool = False, max_llm_calls: int = 100,
                 max_concurrency: int = 4, resume: str | None = None, approval_timeout_s: int = 3600,
                 approve_in: Literal["ui", "terminal"] = "ui") -> PlanRunResult:
    """Load, validate and run the workflow file at `path` with this run's `params`.

    Nothing runs from an invalid file, with invalid params, or with a step granted a tool this
    run does not allow (`allow_write`, `allow_code`). A workflow that ends FAILED raises
    `RunFailed` (its `.result` keeps what finished)."""
    settings = get_settings()
    started = time.time()
    asked = RunPolicy.build(settings=settings, workspace=workspace, allow_write=allow_write, allow_code=allow_code,
                            check_workspace=False)
    workflow = load_workflow(path, build_scope(registry, asked), params)
    folder = workflow.workspace if workspace is None and workflow.workspace is not None else asked.workspace
    policy = asked.narrow(workflow.tools, f"workflow {workflow.name}").in_workspace(folder)
    env = tool_env(policy, settings)
    store = run_store()
    run_key = run_key_for(resume, str(FlowRunContext.get().flow_run.id), store)
    get_run_logger().info("workflow %s from %s: %s%s", workflow.name, workflow.path,
                          " -> ".join(workflow.plan.order),
                          f"; params {workflow.values}" if workflow.values else "")
    plan = workflow.plan.plan.model_dump(mode="json")
    store.record_run(run_key, workflow.name, RunStatus.RUNNING.value, None, plan, [], started, 0.0, "running")
    report = execute_plan(workflow.plan, run_key, policy=policy, env=env, scope=build_scope(registry, policy),
                          agents=registry, settings=settings, store=store,
                          budgets=Budgets(max_llm_calls=max_llm_calls, max_replans=0, max_concurrency=max_concurrency),
                          approver=approver_for(approve_in, env.audit, approval_timeout_s),
                          script_base=workflow.folder)
    store.record_run(run_key, workflow.name, report.status.value, report.stopped_by, plan, [], started,
                     time.time() - started, f"workflow {workflow.name}: {report.status.value}")
    answer = (f"workflow {workflow.name} {report.status.value}"
              + (f" (stopped by {report.stopped_by})" if report.stopped_by else ""))
    return finish(result_of(report, objective=workflow.name, answer=answer, started=started))


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


def deployment_parameters(path: str | Path, params: dict[str, Any] | None = None, *, allow_write: bool = False,
                          allow_code: bool = False) -> tuple[Workflow, dict[str, Any]]:
    """The loaded workflow and the parameters its deployment starts runs with.

    The params form is prefilled with the file's defaults (and `params`), so a person
    editing a run in the UI sees every value. A scheduled workflow needs a value for each
    required param: nobody is there to type it at 3 a.m.
    """
    policy = RunPolicy.build(allow_write=allow_write, allow_code=allow_code, check_workspace=False)
    workflow = load_workflow(path, build_scope(registry, policy), params, require_params=False)
    values = {**workflow.defaults, **{k: workflow.values[k] for k in (params or {})}}
    missing = [name for name in workflow.params if name not in values]
    if missing and workflow.schedule is not None:
        raise WorkflowError(workflow.path, [
            f"params.{name}: required, and the schedule starts runs with nobody to give it; give it a "
            f"default in the file or deploy with `--param {name}=VALUE`" for name in missing])
    switches = {k: True for k, on in (("allow_write", allow_write), ("allow_code", allow_code)) if on}
    return workflow, {"path": str(workflow.path), **({"params": values} if workflow.params else {}), **switches}


def deploy_workflow(path: str | Path, *, work_pool: str = "foreman", paused: bool = False,
                    params: dict[str, Any] | None = None, allow_write: bool = False, allow_code: bool = False) -> str:
    """Create or update the deployment `run-workflow/<name>` for a workflow file, with the file's schedule.

    The worker runs it from this checkout (like `prefect deploy --all` does for prefect.yaml),
    so a user's own workflow folder needs no entry in prefect.yaml. Returns the deployment id.
    """
    workflow, parameters = deployment_parameters(path, params, allow_write=allow_write, allow_code=allow_code)
    schedules = prefect_schedules(workflow, active=not paused)
    source = run_workflow.from_source(source=str(REPO_ROOT), entrypoint="flows/workflow.py:run_workflow")
    deployment_id = source.deploy(
        name=workflow.name, work_pool_name=work_pool, parameters=parameters,
        description=workflow.description or f"workflow {workflow.path}", tags=["foreman", "workflow"],
        schedules=schedules, build=False, push=False, print_next_steps=False,
    )
    return str(deployment_id)


__all__ = ["RunStatus", "deploy_workflow", "deployment_parameters", "prefect_schedules", "run_workflow"]
