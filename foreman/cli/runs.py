"""`foreman run`, `foreman plan`, `foreman search`: an objective in, an answer (or a plan) out."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from foreman.cli._output import (
    console,
    errors_console,
    fail,
    preflight,
    reporting,
    short_tracebacks,
    ui_hint,
)
from foreman.cli.options import APPROVE_HERE, approve_in, show_model
from foreman.engine.records import RunStatus
from foreman.terminal import SafeConsole

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
    ground: Annotated[bool, typer.Option(help="Search the workspace's index first: answer a question from its "
                                              "passages in one call, give them to every step.")] = True,
    kb: Annotated[list[str] | None, typer.Option(help="Also search this ingested knowledge base (repeatable; "
                                                      "`foreman knowledge list`).")] = None,
    file: Annotated[list[str] | None, typer.Option(
        "--file", help="Attach a file: a workspace path or a URL on the allowed hosts (PDF, image, audio, "
                       "text; repeatable). Read before the run: PDF text with page numbers, images for a model "
                       "that sees (OCR otherwise), transcripts; the planner and every step get them.")] = None,
    as_json: Annotated[bool, JSON] = False,
) -> None:
    """Answer OBJECTIVE from the workspace's notes, or plan it into sub-tasks and run them on Prefect."""
    from foreman.cli.live import status_line
    from foreman.cli.preflight import check_planner_run
    from foreman.cli.render import finished_result, render_result
    from foreman.flows.planner import plan_and_run

    out = errors_console if as_json else console
    with preflight():  # refused here, before a flow run exists, rather than as a Failed run
        check_planner_run(workspace=workspace, allow_write=allow_write, allow_code=allow_code, resume=resume,
                          budgets={"max_llm_calls": max_llm_calls, "max_concurrency": max_concurrency},
                          knowledge_bases=kb)
        if file:  # a bad file, or an image that needs eyes the model lacks, is refused here
            from foreman.engine.attachments import prepare_attachments

            prepare_attachments(file, workspace=workspace)  # the run reads them again (kept: no second OCR)
    show_model(out)
    short_tracebacks()
    with reporting(), quiet_prefect(as_json):
        with status_line(errors_console):
            state = plan_and_run(objective=objective, workspace=str(workspace) if workspace else None,
                                 allow_write=allow_write, allow_code=allow_code, max_llm_calls=max_llm_calls,
                                 max_concurrency=max_concurrency, resume=resume,
                                 approve_in=approve_in(approve_here), ground=ground, knowledge_bases=kb or None,
                                 files=file or None, return_state=True)
        result = finished_result(state)
        render_result(result, state.state_details.flow_run_id, as_json=as_json)
    if result.status == RunStatus.FAILED:
        raise typer.Exit(code=1)


def plan(
    objective: Annotated[str, typer.Argument(help="What you want done.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the Plan as JSON on stdout, nothing else.")] = False,
    as_mermaid: Annotated[bool, typer.Option("--mermaid", help="Print the graph as Mermaid (for a page that "
                                                               "draws it) instead of a tree.")] = False,
    allow_write: Annotated[bool, typer.Option(help="Let sub-tasks write files.")] = False,
    allow_code: Annotated[bool, typer.Option(help="Let sub-tasks run Python.")] = False,
    ground: Annotated[bool, typer.Option(help="Show the planner the workspace passages found for OBJECTIVE, "
                                              "as a run does.")] = True,
    file: Annotated[list[str] | None, typer.Option(
        "--file", help="Attach a file, as `foreman run --file` does (repeatable).")] = None,
) -> None:
    """Show the validated plan for OBJECTIVE without running it: a table and the graph as a tree."""
    from foreman.cli.graph import plan_tree
    from foreman.cli.live import status_line
    from foreman.cli.preflight import check_model
    from foreman.engine.explain import mermaid
    from foreman.flows.planner import plan_objective

    out = SafeConsole(stderr=True) if as_json or as_mermaid else console
    with preflight():
        check_model()
        if file:
            from foreman.engine.attachments import prepare_attachments

            prepare_attachments(file)
    show_model(out)
    with reporting(), quiet_prefect(as_json or as_mermaid), status_line(errors_console, show_link=False):
        outcome = plan_objective(objective, allow_write=allow_write, allow_code=allow_code, grounded=ground,
                                 files=file or None)
    valid = outcome.valid
    if as_json:
        sys.stdout.write(valid.plan.model_dump_json(indent=2) + "\n")
        return
    if as_mermaid:
        sys.stdout.write(mermaid(valid.plan) + "\n")
        return
    console.print(Text.assemble(("why: ", "bold"), valid.plan.rationale or "(none given)"))
    files = any(t.files for t in valid.plan.tasks)
    table = Table("id", "title", "agent", "tools", *(["files"] if files else []), "depends on", "condition")
    for t in valid.plan.tasks:
        table.add_row(*(Text(str(v)) for v in (t.id, t.title, t.agent or f"capability {t.capability}",
                                               ", ".join(t.tools) or "-", *([", ".join(t.files) or "-"] if files else []),
                                               ", ".join(t.depends_on) or "-", t.condition or "-")))
    console.print(table)
    console.print(Text(f"order: {' -> '.join(valid.order)}  (depth {valid.depth}"
                       + (f", repaired after {len(outcome.attempts) - 1} invalid draft(s))" if outcome.repaired
                          else ")")))
    console.print(plan_tree(valid.plan))
    console.print(Text("(--mermaid prints the graph as Mermaid)", style="dim"))


def search(
    query: Annotated[str, typer.Argument(help="What to look for in the workspace.")],
    directory: Annotated[Path | None, typer.Option(help="Folder to search (default: FOREMAN_WORKSPACE).")] = None,
    max_llm_calls: Annotated[int, typer.Option(help="Model-call budget per task.")] = 8,
) -> None:
    """Run the file-search flow over a folder and print what the agent found."""
    from foreman.cli.live import status_line
    from foreman.cli.preflight import check_search
    from foreman.flows.file_search import file_search

    with preflight():
        check_search(directory)
    show_model(console)
    short_tracebacks()
    with reporting():
        with status_line(errors_console):
            state = file_search(query=query, directory=str(directory) if directory else None,
                                max_llm_calls=max_llm_calls, return_state=True)
        run_id = state.state_details.flow_run_id
        if state.is_failed():
            fail(f"run failed: {state.message}\n{ui_hint(run_id)}")
        result = state.result()
    console.print(Text.assemble(("files: ", "bold"), ", ".join(result.files) or "(none)"))
    console.print(Text.assemble(("findings: ", "bold"), str(result.findings)))
    console.print(Text(f"audit: foreman audit {run_id}", style="dim"))
    console.print(Text(ui_hint(run_id), style="dim"))
