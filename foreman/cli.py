"""The `foreman` command line: the front door to flows, agents, tools, the audit log and the model.

Heavy imports (ControlFlow, Prefect) happen inside commands, so `foreman --help` is quick.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Column, Table

app = typer.Typer(help="Foreman: LLM agents that do real work, run and watched on Prefect.", no_args_is_help=True)
model_app = typer.Typer(help="Which model agents use, where it is served, how to switch.", invoke_without_command=True)
app.add_typer(model_app, name="model")
workflow_app = typer.Typer(help="Workflow files: your scripts, agents and approval points as one graph.")
app.add_typer(workflow_app, name="workflow")
console = Console()


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


def _approve_in(here: bool | None) -> str:
    """Where approval points ask: the terminal when told, or when no Prefect server is configured
    (the temporary one has no UI a person can open); otherwise the Prefect UI."""
    if here is not None:
        return "terminal" if here else "ui"
    from prefect.settings import get_current_settings

    return "ui" if get_current_settings().api.url else "terminal"


APPROVE_HERE = typer.Option(
    "--approve-here/--approve-in-ui",
    help="Answer approval points on this terminal, or in the Prefect UI. "
         "Default: the UI when PREFECT_API_URL points at a server, else here.",
    show_default=False,
)
PARAM = typer.Option("--param", "-p", help="A workflow parameter, NAME=VALUE (repeat for more).")


def _params(pairs: list[str] | None) -> dict[str, str]:
    """`--param topic=backups` pairs as a dict; the workflow file's types convert the values."""
    params: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            _fail(f"--param {pair!r}: write it as NAME=VALUE, e.g. --param topic=backups")
        params[name.strip()] = value
    return params


def _ui_hint() -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if url:
        return f"See the run in the Prefect UI: {url.removesuffix('/api')}/runs"
    return "Runs used a temporary Prefect server; start `prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api to keep them in the UI at http://127.0.0.1:4200"


def _check_model(out: Console | None = None) -> None:
    from foreman.agents.models import ModelConfigError, check_model_settings, describe_model
    from foreman.settings import get_settings

    settings = get_settings()
    try:
        check_model_settings(settings)
    except ModelConfigError as exc:
        _fail(str(exc))
    (out or console).print(f"[dim]{describe_model(settings)}[/dim]", highlight=False)


@app.command()
def run(
    objective: Annotated[str, typer.Argument(help="What you want done, in plain words.")],
    workspace: Annotated[Path | None, typer.Option(help="Folder the agents may read (default: FOREMAN_WORKSPACE).")] = None,
    allow_write: Annotated[bool, typer.Option(help="Let sub-tasks write files in the workspace.")] = False,
    allow_code: Annotated[bool, typer.Option(help="Let sub-tasks run Python in the sandbox.")] = False,
    max_llm_calls: Annotated[int, typer.Option(help="Model-call budget for the whole run.")] = 60,
    max_concurrency: Annotated[int, typer.Option(help="Sub-tasks running at once.")] = 4,
    resume: Annotated[str | None, typer.Option(help="Run key of an earlier run to resume.")] = None,
    approve_here: Annotated[bool | None, APPROVE_HERE] = None,
) -> None:
    """Plan OBJECTIVE into sub-tasks, run them on Prefect, print the answer."""
    _check_model()
    from foreman.agents.planner import PlanningFailed
    from foreman.flows.planner import RunFailed, plan_and_run

    state = plan_and_run(objective=objective, workspace=str(workspace) if workspace else None,
                         allow_write=allow_write, allow_code=allow_code, max_llm_calls=max_llm_calls,
                         max_concurrency=max_concurrency, resume=resume, approve_in=_approve_in(approve_here),
                         return_state=True)
    run_id = state.state_details.flow_run_id
    try:
        result = state.result()
    except RunFailed as exc:
        result = exc.result
    except PlanningFailed as exc:
        console.print(f"[red]planning failed, nothing ran:[/red] {exc}", highlight=False)
        console.print(f"[dim]{_ui_hint()}[/dim]")
        raise typer.Exit(code=1) from None
    except Exception as exc:  # noqa: BLE001
        console.print(f"[red]run failed:[/red] {exc}", highlight=False)
        console.print(f"[dim]{_ui_hint()}[/dim]")
        raise typer.Exit(code=1) from None
    table = Table("sub-task", "status", "result")
    for sub in result.plan.tasks:
        status = result.statuses.get(sub.id)
        shown = result.results.get(sub.id, "")
        table.add_row(sub.id, status.value if status else "-", str(shown)[:100])
    console.print(table)
    if result.reused:
        console.print(f"reused finished sub-tasks: {', '.join(result.reused)}")
    colour = "green" if result.status.value == "COMPLETED" else "red"
    console.print(f"[{colour}]{result.status.value}[/{colour}]" + (f" (stopped by {result.stopped_by})" if result.stopped_by else ""))
    console.print(f"[bold]answer:[/bold] {result.answer}", highlight=False)
    console.print(f"[dim]{result.llm_calls} model calls, {result.tokens} tokens, {result.duration_s:.1f} s; "
                  f"run key {result.run_key} (resume with --resume); audit: foreman audit {run_id}[/dim]")
    console.print(f"[dim]{_ui_hint()}[/dim]")
    if result.status.value == "FAILED":
        raise typer.Exit(code=1)


@app.command()
def plan(
    objective: Annotated[str, typer.Argument(help="What you want done.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the Plan as JSON on stdout, nothing else.")] = False,
    allow_write: Annotated[bool, typer.Option(help="Let sub-tasks write files.")] = False,
    allow_code: Annotated[bool, typer.Option(help="Let sub-tasks run Python.")] = False,
) -> None:
    """Show the validated plan for OBJECTIVE without running it."""
    import logging

    out = Console(stderr=True) if as_json else console  # keep stdout for the JSON alone
    prefect_logger = logging.getLogger("prefect")
    level = prefect_logger.level
    if as_json:
        prefect_logger.setLevel(logging.WARNING)
    try:
        _plan(objective, as_json, allow_write, allow_code, out)
    finally:
        prefect_logger.setLevel(level)


def _plan(objective: str, as_json: bool, allow_write: bool, allow_code: bool, out: Console) -> None:
    import sys

    _check_model(out)
    from foreman.agents.planner import PlanningFailed
    from foreman.engine.explain import mermaid
    from foreman.flows.planner import plan_objective

    try:
        outcome = plan_objective(objective, allow_write=allow_write, allow_code=allow_code)
    except PlanningFailed as exc:
        out.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(code=1) from None
    valid = outcome.valid
    if as_json:
        sys.stdout.write(valid.plan.model_dump_json(indent=2) + "\n")
        return
    console.print(f"[bold]why:[/bold] {valid.plan.rationale}", highlight=False)
    table = Table("id", "title", "agent", "tools", "depends on", "condition")
    for t in valid.plan.tasks:
        table.add_row(t.id, t.title, t.agent or f"capability {t.capability}", ", ".join(t.tools) or "-",
                      ", ".join(t.depends_on) or "-", t.condition or "-")
    console.print(table)
    console.print(f"order: {' -> '.join(valid.order)}  (depth {valid.depth}"
                  + (f", repaired after {len(outcome.attempts) - 1} invalid draft(s))" if outcome.repaired else ")"))
    console.print(mermaid(valid.plan), highlight=False)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for in the workspace.")],
    directory: Annotated[Path | None, typer.Option(help="Folder to search (default: FOREMAN_WORKSPACE).")] = None,
    max_llm_calls: Annotated[int, typer.Option(help="Model-call budget per task.")] = 8,
) -> None:
    """Run the file-search flow over a folder and print what the agent found."""
    _check_model()
    from foreman.flows.file_search import file_search

    state = file_search(query=query, directory=str(directory) if directory else None,
                        max_llm_calls=max_llm_calls, return_state=True)
    if state.is_failed():
        console.print(f"[red]run failed:[/red] {state.message}", highlight=False)
        console.print(_ui_hint())
        raise typer.Exit(code=1)
    result = state.result()
    console.print(f"[bold]files:[/bold] {', '.join(result.files) or '(none)'}", highlight=False)
    console.print(f"[bold]findings:[/bold] {result.findings}", highlight=False)
    console.print(f"[dim]audit: foreman audit {state.state_details.flow_run_id}[/dim]")
    console.print(f"[dim]{_ui_hint()}[/dim]")


@app.command()
def agents() -> None:
    """List the named agents: what they do, what they may use."""
    from foreman.agents.registry import registry

    table = Table("name", "description", "capabilities", "agent-level tools", "model settings")
    for spec in registry.specs():
        settings = ", ".join(f"{k}={v}" for k, v in spec.model.model_dump(exclude_none=True).items())
        table.add_row(spec.name, spec.description, ", ".join(spec.capabilities), ", ".join(spec.tools) or "-", settings or "default")
    console.print(table)


@app.command()
def tools() -> None:
    """List the tools and their guards."""
    from foreman.settings import get_settings
    from foreman.tools import code
    from foreman.tools.catalog import CATALOG

    settings = get_settings()
    table = Table("tool", "capability", "what it does")
    for spec in CATALOG.values():
        table.add_row(spec.name, spec.capability, spec.summary)
    console.print(table)
    console.print(f"workspace: {settings.workspace}")
    console.print(f"allowed hosts: {', '.join(settings.allowed_hosts)}")
    console.print(f"code sandbox: {code.isolation_report()}")


def _no_server_hint() -> str:
    return ("Is PREFECT_API_URL set to the server the runs use (e.g. http://homelab:4200/api)? "
            "Without it there is only this process's temporary server, with nothing waiting.")


def _require_server() -> None:
    """Approvals live on the server the runs use; a temporary one would show nothing."""
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        _fail(f"no Prefect server configured. {_no_server_hint()}")


@app.command()
def approvals() -> None:
    """Runs waiting for a person at an approval point, with what each step will do."""
    from rich.markdown import Markdown

    from foreman.inbox import waiting_approvals

    _require_server()
    try:
        waiting = waiting_approvals()
    except Exception as exc:  # noqa: BLE001  (no server: say what to do)
        _fail(f"could not read the runs: {exc}\n{_no_server_hint()}")
    if not waiting:
        console.print("nothing waits for an approval")
        return
    for w in waiting:
        until = f", default applies at {w.timeout_at:%Y-%m-%d %H:%M} UTC" if w.timeout_at else ""
        console.rule(f"{w.flow} / {w.run_name}: step {w.step}")
        console.print(f"run id {w.run_id}, waiting since {w.since:%Y-%m-%d %H:%M} UTC{until}", highlight=False)
        console.print(Markdown(w.request or f"Approve step {w.step}?"))
    console.print("\nanswer with: foreman approve RUN_ID [--reject] [--comment TEXT] [--value TEXT]")


@app.command()
def approve(
    run_id: Annotated[str, typer.Argument(help="The paused run's id (from `foreman approvals`).")],
    reject: Annotated[bool, typer.Option("--reject", help="Say no: the step's on_reject rule applies.")] = False,
    comment: Annotated[str, typer.Option(help="Why; kept in the audit log.")] = "",
    value: Annotated[str, typer.Option(help="The answer, when the step asks a question.")] = "",
    by: Annotated[str | None, typer.Option(help="Your name for the audit log (default: your login).")] = None,
) -> None:
    """Approve (or --reject) the step a paused run waits at, as the Resume form in the UI does."""
    import getpass

    from foreman.inbox import NotWaiting, answer_approval

    _require_server()
    try:
        waiting = answer_approval(run_id, approve=not reject, comment=comment, value=value,
                                  decided_by=by or getpass.getuser())
    except NotWaiting as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001
        _fail(f"could not answer: {exc}\n{_no_server_hint()}")
    console.print(f"[green]{'rejected' if reject else 'approved'}[/green] step {waiting.step} of "
                  f"{waiting.flow} / {waiting.run_name}; the run goes on (audit: foreman audit {run_id})")


@app.command()
def decisions() -> None:
    """Every human decision at an approval point, across runs."""
    from foreman.tools.audit import audit_log

    table = Table("time", Column("run", no_wrap=True), "flow", Column("step", no_wrap=True),
                  Column("decision", no_wrap=True), "by", "comment", "value", "timed out")
    for d in audit_log().decisions():
        table.add_row(d.at.strftime("%Y-%m-%d %H:%M:%S"), d.run_name or d.run_id or "-", d.flow_name or "-", d.step,
                      d.decision, d.decided_by or "-", d.comment, d.value or "-", "yes" if d.timed_out else "-")
    console.print(table)


@app.command()
def audit(
    run: Annotated[str | None, typer.Argument(help="Flow-run id (or its first 8+ characters) or run name.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print records as JSON lines.")] = False,
) -> None:
    """Show every tool call and refusal of a run (without RUN: the recent runs)."""
    from foreman.tools.audit import audit_log

    log = audit_log()
    if run is None:
        table = Table("run name", "flow", "first call", "calls", "refused", "errors")
        table.add_column("run id", no_wrap=True, min_width=36)
        for row in log.recent_runs():
            table.add_row(*(str(row[k]) for k in ("run_name", "flow_name", "first", "calls", "refused", "errors", "run_id")))
        console.print(table)
        return
    records = log.for_run(run)
    decisions = log.decisions(run)
    if not records and not decisions:
        _fail(f"no audit records for run {run!r}; `foreman audit` lists recent runs")
    if as_json:
        for record in records:
            typer.echo(record.model_dump_json())
        for decision in decisions:
            typer.echo(decision.model_dump_json())
        return
    if decisions:
        table = Table("time", "step", "decision", "by", "comment", "value", "timed out", title="human decisions")
        for d in decisions:
            table.add_row(d.at.strftime("%H:%M:%S"), d.step, d.decision, d.decided_by or "-", d.comment,
                          d.value or "-", "yes" if d.timed_out else "-")
        console.print(table)
    if not records:
        return
    table = Table("time", "agent", "task", "tool", "arguments", "outcome", "ms", "detail", title=f"run {records[0].run_name} ({records[0].run_id})")
    for r in records:
        colour = {"ok": "green", "refused": "red", "error": "yellow"}[r.outcome]
        table.add_row(r.at.strftime("%H:%M:%S"), r.agent or "-", r.task_name or "-", r.tool,
                      json.dumps(r.arguments)[:80], f"[{colour}]{r.outcome}[/{colour}]",
                      f"{r.duration_ms:.0f}", r.detail[:120])
    console.print(table)


@model_app.callback()
def model(ctx: typer.Context) -> None:
    """Show which model agents use and how to switch."""
    if ctx.invoked_subcommand:
        return
    from foreman.agents.models import ModelConfigError, check_model_settings, describe_model
    from foreman.settings import get_settings

    settings = get_settings()
    console.print(describe_model(settings))
    try:
        check_model_settings(settings)
    except ModelConfigError as exc:
        console.print(f"[red]not usable:[/red] {exc}")
    if settings.model == "local":
        from foreman.agents.local import describe_local_model

        console.print(describe_local_model(settings), highlight=False)


@model_app.command("serve")
def model_serve() -> None:
    """Keep the embedded model up as an OpenAI-compatible endpoint on loopback (Ctrl-C stops it)."""
    from foreman.agents.local import serve_forever
    from foreman.settings import get_settings

    serve_forever(get_settings())


@model_app.command("stop")
def model_stop() -> None:
    """Stop the embedded model server."""
    from foreman.agents import local_server
    from foreman.settings import get_settings

    was_running = local_server.stop(get_settings())
    console.print("stopped the embedded model server" if was_running else "the embedded model server was not running")


@workflow_app.command("init")
def workflow_init(
    folder: Annotated[Path, typer.Argument(help="A folder of Python scripts.")],
    output: Annotated[Path | None, typer.Option(help="Where to write it (default: FOLDER/workflow.yaml).")] = None,
) -> None:
    """Write a workflow skeleton with one step per script, for you to edit."""
    from foreman.engine.workflow import WorkflowError, skeleton

    try:
        text = skeleton(folder)
    except WorkflowError as exc:
        _fail(str(exc))
    target = output or folder / "workflow.yaml"
    if target.exists():
        _fail(f"{target} exists; pass --output to write elsewhere")
    target.write_text(text)
    console.print(f"wrote {target}; edit it, then: foreman workflow check {target}")


@workflow_app.command("check")
def workflow_check(
    file: Annotated[Path, typer.Argument(help="A workflow YAML file.")],
    param: Annotated[list[str] | None, PARAM] = None,
) -> None:
    """Validate a workflow file without running it (with these params, if given)."""
    from foreman.agents.registry import registry
    from foreman.engine.cf_runner import build_scope
    from foreman.engine.explain import mermaid
    from foreman.engine.workflow import WorkflowError, load_workflow

    try:
        workflow = load_workflow(file, build_scope(registry, []), _params(param), require_params=False)
    except WorkflowError as exc:
        _fail(str(exc))
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


notifications_app = typer.Typer(help="Where Foreman tells you about failed runs and waiting approvals.",
                                no_args_is_help=True)
app.add_typer(notifications_app, name="notifications")


@notifications_app.command("test")
def notifications_test() -> None:
    """Send a test message through every block in FOREMAN_NOTIFY_BLOCKS."""
    from foreman.notifications import RunEvent, notify
    from foreman.settings import get_settings

    blocks = get_settings().notify_blocks
    if not blocks:
        _fail("FOREMAN_NOTIFY_BLOCKS is empty; create a notification block (Prefect UI: Blocks -> +) "
              "and name it there, e.g. FOREMAN_NOTIFY_BLOCKS=slack-webhook/ops")
    delivered = notify(RunEvent(kind="test", flow="foreman", message="If you read this, Foreman can reach you."))
    for slug in blocks:
        console.print(f"{slug}: " + ("[green]sent[/green]" if slug in delivered else "[red]failed[/red] (see the log above)"))
    if len(delivered) < len(blocks):
        raise typer.Exit(code=1)


@notifications_app.command("automate")
def notifications_automate() -> None:
    """Create Prefect automations that notify those blocks when a Foreman run crashes."""
    from foreman.notifications import crash_automations

    try:
        names = crash_automations()
    except Exception as exc:  # noqa: BLE001  (no server, no block: say what to do)
        _fail(f"could not create the automations: {exc}\nIs PREFECT_API_URL set to a running server, and "
              "does every block in FOREMAN_NOTIFY_BLOCKS exist there?")
    if not names:
        _fail("FOREMAN_NOTIFY_BLOCKS is empty: nothing to notify")
    for name in names:
        console.print(f"[green]created[/green] automation {name!r} (Prefect UI: Automations)")


@workflow_app.command("deploy")
def workflow_deploy(
    file: Annotated[Path, typer.Argument(help="A workflow YAML file.")],
    pool: Annotated[str, typer.Option(help="Process work pool a `prefect worker` serves.")] = "foreman",
    paused: Annotated[bool, typer.Option("--paused", help="Create its schedule switched off.")] = False,
    param: Annotated[list[str] | None, PARAM] = None,
) -> None:
    """Deploy a workflow file to the Prefect server with the schedule it carries (run-workflow/<name>)."""
    from foreman.engine.workflow import WorkflowError
    from foreman.flows.workflow import deploy_workflow

    try:
        deployment_id = deploy_workflow(file, work_pool=pool, paused=paused, params=_params(param))
    except WorkflowError as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001  (no server, no pool: say what to do)
        _fail(f"could not deploy: {exc}\nIs the Prefect server running (`prefect server start`) and the "
              f"pool created (`prefect work-pool create {pool} --type process`)?")
    console.print(f"[green]deployed[/green] {file} as deployment {deployment_id}; a worker on pool {pool!r} "
                  f"runs it (`prefect worker start --pool {pool}`)")


@workflow_app.command("run")
def workflow_run(
    file: Annotated[Path, typer.Argument(help="A workflow YAML file.")],
    workspace: Annotated[Path | None, typer.Option(help="Folder agent steps may read.")] = None,
    resume: Annotated[str | None, typer.Option(help="Run key of an earlier run to resume.")] = None,
    approve_here: Annotated[bool | None, APPROVE_HERE] = None,
    param: Annotated[list[str] | None, PARAM] = None,
) -> None:
    """Run a workflow file now, with these params."""
    from foreman.engine.workflow import WorkflowError
    from foreman.flows.planner import RunFailed
    from foreman.flows.workflow import run_workflow

    state = run_workflow(path=str(file.resolve()), params=_params(param) or None,
                         workspace=str(workspace) if workspace else None,
                         resume=resume, approve_in=_approve_in(approve_here), return_state=True)
    try:
        result = state.result()
    except RunFailed as exc:
        result = exc.result
    except WorkflowError as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001
        _fail(f"run failed: {exc}")
    table = Table("step", "status", "result")
    for sub in result.plan.tasks:
        status = result.statuses.get(sub.id)
        table.add_row(sub.id, status.value if status else "-", str(result.results.get(sub.id, ""))[:100])
    console.print(table)
    console.print(result.answer, highlight=False)
    if result.status.value != "COMPLETED":
        raise typer.Exit(code=1)


if __name__ == "__main__":
    app()
