"""`foreman workflow init|check|deploy|run`: your scripts, agents and approval points as one graph."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from foreman.cli._output import (
    REFUSED,
    console,
    errors_console,
    fail,
    preflight,
    reporting,
    require_server,
    short_tracebacks,
)
from foreman.cli.options import APPROVE_HERE, PARAM, approve_in, params
from foreman.engine.records import RunStatus

if TYPE_CHECKING:
    from foreman.engine.workflow import Workflow

workflow_app = typer.Typer(help="Workflow files: your scripts, agents and approval points as one graph.")
ALLOW_WRITE = typer.Option(help="Let agent steps write files in the workspace.")
ALLOW_CODE = typer.Option(help="Let agent steps run Python in the sandbox.")


def check_workflow(file: Path, values: dict[str, str], *, allow_write: bool, allow_code: bool,
                   require_params: bool = True) -> Workflow:
    """The workflow as a run with these params and permissions would load it, or its errors."""
    from foreman.agents.registry import registry
    from foreman.engine.cf_runner import build_scope
    from foreman.engine.policy import RunPolicy
    from foreman.engine.workflow import check_step_files, load_workflow

    policy = RunPolicy.build(allow_write=allow_write, allow_code=allow_code, check_workspace=False)
    workflow = load_workflow(file, build_scope(registry, policy), values, require_params=require_params)
    policy.narrow(workflow.tools, f"workflow {workflow.name}")
    # as a run in that folder reads them (a file a missing param names cannot be checked yet)
    check_step_files(workflow, workflow.workspace or policy.workspace, skip_blank=not require_params)
    return workflow


@workflow_app.command("init")
def workflow_init(
    folder: Annotated[Path, typer.Argument(help="A folder of Python scripts.")],
    output: Annotated[Path | None, typer.Option(help="Where to write it (default: FOLDER/workflow.yaml).")] = None,
) -> None:
    """Write a workflow skeleton with one step per script, for you to edit (its schedule commented out)."""
    from foreman.engine.workflow import skeleton

    with preflight():
        text = skeleton(folder)
    target = output or folder / "workflow.yaml"
    if target.exists():
        fail(f"{target} exists; pass --output to write elsewhere", REFUSED)
    target.write_text(text)
    console.print(Text(f"wrote {target}; edit it, then: foreman workflow check {target}"))


@workflow_app.command("check")
def workflow_check(
    file: Annotated[Path, typer.Argument(help="A workflow YAML file.")],
    param: Annotated[list[str] | None, PARAM] = None,
    allow_write: Annotated[bool, ALLOW_WRITE] = False,
    allow_code: Annotated[bool, ALLOW_CODE] = False,
    as_mermaid: Annotated[bool, typer.Option("--mermaid", help="Print the graph as Mermaid instead of a tree.")] = False,
) -> None:
    """Validate a workflow file without running it (with these params and permissions, if given)."""
    from foreman.cli.graph import plan_tree
    from foreman.engine.explain import mermaid

    with preflight():
        workflow = check_workflow(file, params(param), allow_write=allow_write, allow_code=allow_code,
                                  require_params=False)
    console.print(Text.assemble(("ok", "green"), f": {workflow.name}, {len(workflow.plan.plan.tasks)} steps, "
                                f"order {' -> '.join(workflow.plan.order)}"
                                + (f", schedule {workflow.schedule.model_dump(exclude_none=True)}"
                                   if workflow.schedule else "")))
    approvals = [t.id for t in workflow.plan.plan.tasks if t.approval]
    if approvals:
        forced = workflow.plan.approvals_added
        console.print(Text(f"approval points: {', '.join(approvals)}"
                           + (f" ({', '.join(forced)} because of FOREMAN_APPROVAL_TOOLS)" if forced else "")))
    for step in workflow.plan.plan.tasks:
        if step.files:
            console.print(Text(f"files for {step.id}: {', '.join(step.files)} (read: ok)"))
    for name, spec in workflow.params.items():
        console.print(Text(f"param {name} ({spec.type}): " + ("required" if spec.required else f"default {spec.default!r}")
                           + (f" - {spec.description}" if spec.description else "")))
    if as_mermaid:
        typer.echo(mermaid(workflow.plan.plan))
    else:
        console.print(plan_tree(workflow.plan.plan, title=f"workflow {workflow.name}"))


@workflow_app.command("deploy")
def workflow_deploy(
    file: Annotated[Path, typer.Argument(help="A workflow YAML file.")],
    pool: Annotated[str, typer.Option(help="Process work pool a `prefect worker` serves.")] = "foreman",
    schedule_on: Annotated[bool, typer.Option("--schedule-on", help="Switch the file's schedule on now (it is "
                                                                    "created switched off).")] = False,
    name: Annotated[str | None, typer.Option(help="Deployment name (default: the file's name:).")] = None,
    param: Annotated[list[str] | None, PARAM] = None,
    allow_write: Annotated[bool, ALLOW_WRITE] = False,
    allow_code: Annotated[bool, ALLOW_CODE] = False,
) -> None:
    """Deploy a workflow file to the Prefect server as run-workflow/<name>, its schedule off unless --schedule-on.

    A deployment of that name that this command did not make from this file (a shipped one
    from prefect.yaml, or another file's) is left alone: deploy under another --name."""
    from foreman.cli.preflight import check_work_pool
    from foreman.flows.workflow import (
        deploy_workflow,
        deployment_parameters,
        existing_deployment,
        refuse_takeover,
    )

    require_server()
    with preflight():
        workflow, _ = deployment_parameters(file, params(param), allow_write=allow_write, allow_code=allow_code)
        check_work_pool(pool)
        existing = existing_deployment(name or workflow.name)
        refuse_takeover(existing, workflow, name or workflow.name)
    with reporting():
        deployment_id = deploy_workflow(file, work_pool=pool, schedule_on=schedule_on, params=params(param),
                                        allow_write=allow_write, allow_code=allow_code, name=name)
    was_on = bool(existing and any(s.active for s in existing.schedules or []))
    schedule = ("it has no schedule" if workflow.schedule is None
                else "its schedule is ON" if schedule_on
                else "its schedule stays ON (it was switched on before)" if was_on
                else "its schedule is OFF: switch it on in the UI (Deployments) or deploy with --schedule-on")
    console.print(Text.assemble(("deployed", "green"), f" {file} as run-workflow/{name or workflow.name} "
                                f"({deployment_id}); {schedule}. A worker on pool {pool!r} runs it "
                                f"(`prefect worker start --pool {pool}`)."))


@workflow_app.command("run")
def workflow_run(
    file: Annotated[Path, typer.Argument(help="A workflow YAML file.")],
    workspace: Annotated[Path | None, typer.Option(help="Folder agent steps may read.")] = None,
    resume: Annotated[str | None, typer.Option(help="Run key of an earlier run to resume.")] = None,
    approve_here: Annotated[bool | None, APPROVE_HERE] = None,
    param: Annotated[list[str] | None, PARAM] = None,
    allow_write: Annotated[bool, ALLOW_WRITE] = False,
    allow_code: Annotated[bool, ALLOW_CODE] = False,
    ground: Annotated[bool, typer.Option(help="Give agent steps the workspace passages for their "
                                              "instructions (indexing the workspace first).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole result as JSON on stdout.")] = False,
) -> None:
    """Run a workflow file now, with these params."""
    from foreman.cli.live import status_line
    from foreman.cli.preflight import check_workflow_run
    from foreman.cli.render import finished_result, render_result
    from foreman.cli.runs import quiet_prefect
    from foreman.flows.workflow import run_workflow

    values = params(param)
    with preflight():  # before any flow run: a bad file, param or folder is one line, not a Failed run
        check_workflow_run(file, values, workspace=workspace, allow_write=allow_write, allow_code=allow_code,
                           resume=resume)
    short_tracebacks()
    with reporting(), quiet_prefect(as_json):
        with status_line(errors_console):
            state = run_workflow(path=str(file.resolve()), params=values or None,
                                 workspace=str(workspace) if workspace else None, allow_write=allow_write,
                                 allow_code=allow_code, resume=resume, approve_in=approve_in(approve_here),
                                 ground=ground, return_state=True)
        result = finished_result(state)
        render_result(result, state.state_details.flow_run_id, as_json=as_json, what="step")
    if result.status != RunStatus.COMPLETED:
        raise typer.Exit(code=1)
