"""`foreman workflow init|check|deploy|run`: your scripts, agents and approval points as one graph."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from foreman.cli._output import console, fail, reporting
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
    from foreman.engine.workflow import load_workflow

    policy = RunPolicy.build(allow_write=allow_write, allow_code=allow_code, check_workspace=False)
    workflow = load_workflow(file, build_scope(registry, policy), values, require_params=require_params)
    policy.narrow(workflow.tools, f"workflow {workflow.name}")
    return workflow


@workflow_app.command("init")
def workflow_init(
    folder: Annotated[Path, typer.Argument(help="A folder of Python scripts.")],
    output: Annotated[Path | None, typer.Option(help="Where to write it (default: FOLDER/workflow.yaml).")] = None,
) -> None:
    """Write a workflow skeleton with one step per script, for you to edit."""
    from foreman.engine.workflow import skeleton

    with reporting():
        text = skeleton(folder)
    target = output or folder / "workflow.yaml"
    if target.exists():
        fail(f"{target} exists; pass --output to write elsewhere", 2)
    target.write_text(text)
    console.print(f"wrote {target}; edit it, then: foreman workflow check {target}")


@workflow_app.command("check")
def workflow_check(
    file: Annotated[Path, typer.Argument(help="A workflow YAML file.")],
    param: Annotated[list[str] | None, PARAM] = None,
    allow_write: Annotated[bool, ALLOW_WRITE] = False,
    allow_code: Annotated[bool, ALLOW_CODE] = False,
) -> None:
    """Validate a workflow file without running it (with these params and permissions, if given)."""
    from foreman.engine.explain import mermaid

    with reporting():
        workflow = check_workflow(file, params(param), allow_write=allow_write, allow_code=allow_code,
                                  require_params=False)
    console.print(f"[green]ok[/green]: {workflow.name}, {len(workflow.plan.plan.tasks)} steps, "
                  f"order {' -> '.join(workflow.plan.order)}"
                  + (f", schedule {workflow.schedule.model_dump(exclude_none=True)}" if workflow.schedule else ""))
    approvals = [t.id for t in workflow.plan.plan.tasks if t.approval]
    if approvals:
        forced = workflow.plan.approvals_added
        console.print(f"approval points: {', '.join(approvals)}"
                      + (f" ({', '.join(forced)} because of FOREMAN_APPROVAL_TOOLS)" if forced else ""))
    for name, spec in workflow.params.items():
        console.print(f"param {name} ({spec.type}): " + ("required" if spec.required else f"default {spec.default!r}")
                      + (f" - {spec.description}" if spec.description else ""), highlight=False)
    console.print(mermaid(workflow.plan.plan), highlight=False)


@workflow_app.command("deploy")
def workflow_deploy(
    file: Annotated[Path, typer.Argument(help="A workflow YAML file.")],
    pool: Annotated[str, typer.Option(help="Process work pool a `prefect worker` serves.")] = "foreman",
    paused: Annotated[bool, typer.Option("--paused", help="Create its schedule switched off.")] = False,
    param: Annotated[list[str] | None, PARAM] = None,
    allow_write: Annotated[bool, ALLOW_WRITE] = False,
    allow_code: Annotated[bool, ALLOW_CODE] = False,
) -> None:
    """Deploy a workflow file to the Prefect server with the schedule it carries (run-workflow/<name>)."""
    from foreman.flows.workflow import deploy_workflow

    with reporting():
        deployment_id = deploy_workflow(file, work_pool=pool, paused=paused, params=params(param),
                                        allow_write=allow_write, allow_code=allow_code)
    console.print(f"[green]deployed[/green] {file} as deployment {deployment_id}; a worker on pool {pool!r} "
                  f"runs it (`prefect worker start --pool {pool}`; create the pool once with "
                  f"`prefect work-pool create {pool} --type process`)")


@workflow_app.command("run")
def workflow_run(
    file: Annotated[Path, typer.Argument(help="A workflow YAML file.")],
    workspace: Annotated[Path | None, typer.Option(help="Folder agent steps may read.")] = None,
    resume: Annotated[str | None, typer.Option(help="Run key of an earlier run to resume.")] = None,
    approve_here: Annotated[bool | None, APPROVE_HERE] = None,
    param: Annotated[list[str] | None, PARAM] = None,
    allow_write: Annotated[bool, ALLOW_WRITE] = False,
    allow_code: Annotated[bool, ALLOW_CODE] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole result as JSON on stdout.")] = False,
) -> None:
    """Run a workflow file now, with these params."""
    from foreman.cli.render import finished_result, render_result
    from foreman.cli.runs import quiet_prefect
    from foreman.flows.workflow import run_workflow

    with reporting(), quiet_prefect(as_json):
        check_workflow(file, params(param), allow_write=allow_write, allow_code=allow_code)  # before any flow run
        state = run_workflow(path=str(file.resolve()), params=params(param) or None,
                             workspace=str(workspace) if workspace else None, allow_write=allow_write,
                             allow_code=allow_code, resume=resume, approve_in=approve_in(approve_here),
                             return_state=True)
        result = finished_result(state)
        render_result(result, state.state_details.flow_run_id, as_json=as_json, what="step")
    if result.status != RunStatus.COMPLETED:
        raise typer.Exit(code=1)
