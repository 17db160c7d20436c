"""`foreman run`, `foreman plan`, `foreman search`: an objective in, an answer (or a plan) out."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from foreman.cli._output import console, errors_console, fail, reporting, ui_hint
from foreman.cli.options import APPROVE_HERE, approve_in, check_model
from foreman.engine.records import RunStatus

JSON = typer.Option("--json", help="Print the whole result as JSON on stdout, nothing else there.")


@contextmanager
def quiet_prefect(enabled: bool) -> Iterator[None]:
    """Keep stdout for JSON alone: Prefect's run logs drop to warnings while it prints."""
    logger = logging.getLogger("prefect")
    level = logger.level
    if enabled:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def run(
    objective: Annotated[str, typer.Argument(help="What you want done, in plain words.")],
    workspace: Annotated[Path | None, typer.Option(help="Folder the agents may read (default: FOREMAN_WORKSPACE).")] = None,
    allow_write: Annotated[bool, typer.Option(help="Let sub-tasks write files in the workspace.")] = False,
    allow_code: Annotated[bool, typer.Option(help="Let sub-tasks run Python in the sandbox.")] = False,
    max_llm_calls: Annotated[int, typer.Option(help="Model-call budget for the whole run.")] = 60,
    max_concurrency: Annotated[int, typer.Option(help="Sub-tasks running at once.")] = 4,
    resume: Annotated[str | None, typer.Option(help="Run key of an earlier run to resume.")] = None,
    approve_here: Annotated[bool | None, APPROVE_HERE] = None,
    as_json: Annotated[bool, JSON] = False,
) -> None:
    """Plan OBJECTIVE into sub-tasks, run them on Prefect, print the answer."""
    from foreman.cli.render import finished_result, render_result
    from foreman.engine.policy import RunPolicy
    from foreman.flows.planner import plan_and_run

    with reporting(), quiet_prefect(as_json):
        check_model(errors_console if as_json else console)
        # refused here, before a flow run exists, rather than as a Failed run
        RunPolicy.build(workspace=workspace, allow_write=allow_write, allow_code=allow_code)
        state = plan_and_run(objective=objective, workspace=str(workspace) if workspace else None,
                             allow_write=allow_write, allow_code=allow_code, max_llm_calls=max_llm_calls,
                             max_concurrency=max_concurrency, resume=resume, approve_in=approve_in(approve_here),
                             return_state=True)
        result = finished_result(state)
        render_result(result, state.state_details.flow_run_id, as_json=as_json)
    if result.status == RunStatus.FAILED:
        raise typer.Exit(code=1)


def plan(
    objective: Annotated[str, typer.Argument(help="What you want done.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the Plan as JSON on stdout, nothing else.")] = False,
    allow_write: Annotated[bool, typer.Option(help="Let sub-tasks write files.")] = False,
    allow_code: Annotated[bool, typer.Option(help="Let sub-tasks run Python.")] = False,
) -> None:
    """Show the validated plan for OBJECTIVE without running it."""
    from foreman.engine.explain import mermaid
    from foreman.flows.planner import plan_objective

    out = Console(stderr=True) if as_json else console
    with reporting(), quiet_prefect(as_json):
        check_model(out)
        outcome = plan_objective(objective, allow_write=allow_write, allow_code=allow_code)
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


def search(
    query: Annotated[str, typer.Argument(help="What to look for in the workspace.")],
    directory: Annotated[Path | None, typer.Option(help="Folder to search (default: FOREMAN_WORKSPACE).")] = None,
    max_llm_calls: Annotated[int, typer.Option(help="Model-call budget per task.")] = 8,
) -> None:
    """Run the file-search flow over a folder and print what the agent found."""
    from foreman.flows.file_search import file_search

    with reporting():
        check_model()
        state = file_search(query=query, directory=str(directory) if directory else None,
                            max_llm_calls=max_llm_calls, return_state=True)
        if state.is_failed():
            fail(f"run failed: {state.message}\n{ui_hint()}")
        result = state.result()
    console.print(f"[bold]files:[/bold] {', '.join(result.files) or '(none)'}", highlight=False)
    console.print(f"[bold]findings:[/bold] {result.findings}", highlight=False)
    console.print(f"[dim]audit: foreman audit {state.state_details.flow_run_id}[/dim]")
    console.print(f"[dim]{ui_hint()}[/dim]")
