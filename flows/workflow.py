"""Run a workflow file (Level 6): the user's scripts, agents and approval points, on the plan engine.

Deploying one (`deploy_workflow`) gives it a form of its own in the Prefect UI: the file's
`params:` as typed fields, its path fixed. A deployment that Foreman did not make from this
file (a shipped one from prefect.yaml, or another file's) is never taken over, and a
schedule is switched on only when asked.
"""

from __future__ import annotations

import foreman  # noqa: F401  (offline env first: Prefect may load this file by path)

# isort: split

import time
from pathlib import Path
from typing import Any, Literal

from prefect import Flow, flow, get_run_logger, task
from prefect.cache_policies import NONE as NO_CACHE
from prefect.context import FlowRunContext
from pydantic import BaseModel, Field

from foreman.agents.registry import registry
from foreman.engine.cf_runner import build_scope
from foreman.engine.explain import ProgressArtifact
from foreman.engine.grounding import refresh_workspace
from foreman.engine.policy import RunPolicy, tool_env
from foreman.engine.progress import listening
from foreman.engine.records import Budgets, RunStatus
from foreman.engine.runs import (
    PlanRunResult,
    execute_plan,
    finish,
    not_run_reasons,
    result_of,
    run_key_for,
)
from foreman.engine.store import run_store
from foreman.engine.task_runners import task_runner
from foreman.engine.workflow import Workflow, WorkflowError, check_step_files, load_workflow
from foreman.errors import ConfigurationError
from foreman.flows.approval import approver_for
from foreman.flows.forms import offer_form, workflow_form
from foreman.notifications import FAILURE_HOOKS
from foreman.settings import REPO_ROOT, Settings, get_settings

DEPLOYED_TAG = "workflow-file"  # marks deployments `foreman workflow deploy` made (and may update)


def prepare_workflow(path: str | Path, params: dict[str, Any] | None, *, workspace: str | Path | None = None,
                     allow_write: bool = False, allow_code: bool = False,
                     settings: Settings | None = None) -> tuple[Workflow, RunPolicy]:
    """The workflow and the policy a run of it gets, or the error that stops it.

    The flow calls it first; `foreman workflow run` calls it before a flow run exists, so a bad
    file, param, folder or attached file (a step's `files:`) is one line and exit code 2, never a
    Failed run."""
    asked = RunPolicy.build(settings=settings, workspace=workspace, allow_write=allow_write, allow_code=allow_code,
                            check_workspace=False)
    workflow = load_workflow(path, build_scope(registry, asked), params)
    folder = workflow.workspace if workspace is None and workflow.workspace is not None else asked.workspace
    policy = asked.narrow(workflow.tools, f"workflow {workflow.name}").in_workspace(folder)
    check_step_files(workflow, policy.workspace, settings)
    return workflow, policy


class RunWorkflowForm(BaseModel):
    """The run-workflow deployment's form. `resume` and `approve_in` stay Python-only."""

    path: str = Field(title="Workflow file", description="The workflow YAML to run (relative to the checkout, "
                                                         "or absolute).")
    params: dict[str, Any] | None = Field(default=None, title="Workflow parameters",
                                          description="Values for the file's params: block, by name.")
    workspace: str | None = Field(default=None, title="Workspace folder",
                                  description="The folder agent steps read (default: the file's workspace:).")
    allow_write: bool = Field(default=False, title="Allow writing files", description="Let agent steps write files.")
    allow_code: bool = Field(default=False, title="Allow running Python", description="Let agent steps run Python.")
    max_llm_calls: int = Field(default=100, title="Model-call budget", description="For the whole run.")
    max_concurrency: int = Field(default=4, title="Steps at once", description="Steps running at the same time.")
    approval_timeout_s: int = Field(default=3600, title="Approval timeout (s)",
                                    description="How long an approval point waits before its default applies.")
    ground: bool = Field(default=True, title="Ground agent steps in the knowledge base",
                         description="Give each agent step the workspace passages for its instructions.")


@flow(name="run-workflow", task_runner=task_runner(), log_prints=True, persist_result=True,
      **FAILURE_HOOKS)
def run_workflow(path: str, params: dict[str, Any] | None = None, workspace: str | None = None,
                 allow_write: bool = False, allow_code: bool = False, max_llm_calls: int = 100,
                 max_concurrency: int = 4, resume: str | None = None, approval_timeout_s: int = 3600,
                 approve_in: Literal["ui", "terminal"] = "ui", ground: bool = True) -> PlanRunResult:
    """Load, validate and run the workflow file at `path` with this run's `params`.

    Nothing runs from an invalid file, with invalid params, or with a step granted a tool this
    run does not allow (`allow_write`, `allow_code`). A workflow that ends FAILED raises
    `RunFailed` (its `.result` keeps what finished). With `ground`, a workflow with agent steps
    brings the workspace's index up to date first and gives each agent step the passages for
    its own instructions; script steps are never touched."""
    settings = get_settings()
    started = time.time()
    run_id = str(FlowRunContext.get().flow_run.id)
    workflow, policy = prepare_workflow(path, params, workspace=workspace, allow_write=allow_write,
                                        allow_code=allow_code, settings=settings)
    env = tool_env(policy, settings)
    store = run_store()
    run_key = run_key_for(resume, run_id, store)
    get_run_logger().info("workflow %s from %s: %s%s", workflow.name, workflow.path,
                          " -> ".join(workflow.plan.order),
                          f"; params {workflow.values}" if workflow.values else "")
    plan = workflow.plan.plan.model_dump(mode="json")
    grounded = ground and any(t.script is None for t in workflow.plan.plan.tasks)
    if grounded:
        index_workspace(policy, settings)
    store.record_run(run_key, workflow.name, RunStatus.RUNNING.value, None, plan, [], started, 0.0, "running")
    with listening(ProgressArtifact(run_id, f"running workflow {workflow.name}")):
        scope = build_scope(registry, policy).model_copy(update={"scripts_from_file": True})  # (no planner here)
        report = execute_plan(workflow.plan, run_key, policy=policy, env=env, scope=scope,
                              agents=registry, settings=settings, store=store,
                              budgets=Budgets(max_llm_calls=max_llm_calls, max_replans=0,
                                              max_concurrency=max_concurrency),
                              approver=approver_for(approve_in, env.audit, approval_timeout_s),
                              script_base=workflow.folder,
                              grounded_objective=(workflow.description or workflow.name) if grounded else None)
    store.record_run(run_key, workflow.name, report.status.value, report.stopped_by, plan, [], started,
                     time.time() - started, f"workflow {workflow.name}: {report.status.value}")
    answer = (f"workflow {workflow.name} {report.status.value}"
              + (f" (stopped by {report.stopped_by})" if report.stopped_by else ""))
    sources = [s for found in report.sources.values() for s in found]
    return finish(result_of(report, objective=workflow.name, answer=answer, started=started, sources=sources),
                  not_run_reasons(report))


def index_workspace(policy: RunPolicy, settings: Settings) -> None:
    """The workspace's index brought up to date as a task run of its own ("index" in the UI)."""

    @task(name="index", task_run_name="index workspace", cache_policy=NO_CACHE, persist_result=False)
    def index() -> None:
        report = refresh_workspace(policy, settings)
        if report is not None:
            get_run_logger().info("index: %s", report.summary())

    index()


offer_form(run_workflow, RunWorkflowForm)


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


def load_for_deploy(path: str | Path, params: dict[str, Any] | None = None, *, allow_write: bool = False,
                    allow_code: bool = False) -> Workflow:
    """The workflow as a deployment sees it: every check, required params may still be missing."""
    policy = RunPolicy.build(allow_write=allow_write, allow_code=allow_code, check_workspace=False)
    return load_workflow(path, build_scope(registry, policy), params, require_params=False)


def deployment_parameters(path: str | Path, params: dict[str, Any] | None = None, *, allow_write: bool = False,
                          allow_code: bool = False) -> tuple[Workflow, dict[str, Any]]:
    """The loaded workflow and the parameters its deployment starts runs with.

    The params form is prefilled with the file's defaults (and `params`), so a person
    editing a run in the UI sees every value. A scheduled workflow needs a value for each
    required param: nobody is there to type it at 3 a.m.
    """
    workflow = load_for_deploy(path, params, allow_write=allow_write, allow_code=allow_code)
    values = {**workflow.defaults, **{k: workflow.values[k] for k in (params or {})}}
    missing = [name for name in workflow.params if name not in values]
    if missing and workflow.schedule is not None:
        raise WorkflowError(workflow.path, [
            f"params.{name}: required, and the schedule starts runs with nobody to give it; give it a "
            f"default in the file or deploy with `--param {name}=VALUE`" for name in missing])
    switches = {k: True for k, on in (("allow_write", allow_write), ("allow_code", allow_code)) if on}
    return workflow, {"path": str(workflow.path), **({"params": values} if workflow.params else {}), **switches}


def workflow_flow(workflow: Workflow, shown_path: str | None = None) -> Flow:
    """run-workflow for one file, with that file's form: path fixed, `params:` as typed fields.

    The same flow (same name, same code): only the form Prefect draws differs."""
    one = run_workflow.with_options()
    return offer_form(one, workflow_form(workflow, RunWorkflowForm, shown_path or str(workflow.path)),
                      same_defaults=False)


def existing_deployment(name: str) -> Any | None:
    """The deployment run-workflow/<name> on the server, if there is one."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(f"run-workflow/{name}")
        except ObjectNotFound:
            return None


def refuse_takeover(existing: Any, workflow: Workflow, name: str) -> None:
    """A deployment of that name that `deploy_workflow` did not make from this very file stays as it is."""
    if existing is None:
        return
    ours = DEPLOYED_TAG in (existing.tags or [])
    same_file = str((existing.parameters or {}).get("path")) == str(workflow.path)
    if ours and same_file:
        return
    made_by = (f"from another file, {existing.parameters.get('path')}" if ours
               else "by prefect.yaml or by hand, not by `foreman workflow deploy`")
    raise ConfigurationError(
        f"deployment run-workflow/{name} already exists, made {made_by}; it is left as it is. "
        f"Deploy this file under another name: foreman workflow deploy {workflow.path} --name {name}-2")


def deploy_workflow(path: str | Path, *, work_pool: str = "foreman", schedule_on: bool = False,
                    params: dict[str, Any] | None = None, allow_write: bool = False, allow_code: bool = False,
                    name: str | None = None) -> str:
    """Create or update the deployment `run-workflow/<name>` for a workflow file, with the file's schedule.

    The schedule is created switched off unless `schedule_on`; updating keeps it as it was
    (a schedule someone switched on in the UI stays on). The worker runs it from this
    checkout (like `prefect deploy --all` does for prefect.yaml), so a user's own workflow
    folder needs no entry in prefect.yaml. Returns the deployment id.
    """
    from prefect.deployments.runner import deploy
    from prefect.utilities.callables import parameter_schema

    workflow, parameters = deployment_parameters(path, params, allow_write=allow_write, allow_code=allow_code)
    name = name or workflow.name
    existing = existing_deployment(name)
    refuse_takeover(existing, workflow, name)
    was_on = bool(existing and any(s.active for s in existing.schedules or []))
    source = run_workflow.from_source(source=str(REPO_ROOT), entrypoint="flows/workflow.py:run_workflow")
    deployment = source.to_deployment(
        name=name, work_pool_name=work_pool, parameters=parameters,
        description=workflow.description or f"workflow {workflow.path}", tags=["foreman", "workflow", DEPLOYED_TAG],
        schedules=prefect_schedules(workflow, active=schedule_on or was_on),
    )
    deployment._parameter_openapi_schema = parameter_schema(workflow_flow(workflow))
    [deployment_id] = deploy(deployment, work_pool_name=work_pool, build=False, push=False,
                             print_next_steps_message=False)
    return str(deployment_id)


__all__ = ["RunStatus", "deploy_workflow", "deployment_parameters", "prefect_schedules", "run_workflow",
           "workflow_flow"]
