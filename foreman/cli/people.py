"""`foreman approvals|approve|decisions|audit`: what waits for a person, what people decided, what tools did."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Column, Table
from rich.text import Text

from foreman.cli._output import console, fail, reporting, require_server


def approvals() -> None:
    """Runs waiting for a person at an approval point, with what each step will do."""
    from rich.markdown import Markdown

    from foreman.inbox import waiting_approvals

    require_server()
    with reporting():
        waiting = waiting_approvals()
    if not waiting:
        console.print("nothing waits for an approval")
        return
    for w in waiting:
        until = f", default applies at {w.timeout_at:%Y-%m-%d %H:%M} UTC" if w.timeout_at else ""
        console.rule(Text(f"{w.flow} / {w.run_name}: step {w.step}"))
        console.print(Text(f"run id {w.run_id}, waiting since {w.since:%Y-%m-%d %H:%M} UTC{until}"))
        console.print(Markdown(w.request or f"Approve step {w.step}?"))
    console.print(Text("\nanswer with: foreman approve RUN [--reject] [--comment TEXT] [--value TEXT]"
                       "   (RUN: its id, first 8+ characters, or run name)"))


def approve(
    run: Annotated[str, typer.Argument(help="The paused run: its id, its first 8+ characters, or its run name "
                                            "(from `foreman approvals`).")],
    reject: Annotated[bool, typer.Option("--reject", help="Say no: the step's on_reject rule applies.")] = False,
    comment: Annotated[str, typer.Option(help="Why; kept in the audit log.")] = "",
    value: Annotated[str, typer.Option(help="The answer, when the step asks a question.")] = "",
    by: Annotated[str | None, typer.Option(help="Your name for the audit log (default: your login).")] = None,
) -> None:
    """Approve (or --reject) the step a paused run waits at, as the Resume form in the UI does."""
    import getpass

    from foreman.inbox import answer_approval

    require_server()
    with reporting():
        waiting = answer_approval(run, approve=not reject, comment=comment, value=value,
                                  decided_by=by or getpass.getuser())
    console.print(Text.assemble(("rejected" if reject else "approved", "green"),
                                f" step {waiting.step} of {waiting.flow} / {waiting.run_name}; the run goes on "
                                f"(audit: foreman audit {waiting.run_id})"))


def decisions() -> None:
    """Every human decision at an approval point, across runs."""
    from foreman.tools.audit import audit_log

    with reporting():
        found = audit_log().decisions()
    table = Table("time", Column("run", no_wrap=True), "flow", Column("step", no_wrap=True),
                  Column("decision", no_wrap=True), "by", "comment", "value", "timed out")
    for d in found:
        table.add_row(*_cells(d.at.strftime("%Y-%m-%d %H:%M:%S"), d.run_name or d.run_id or "-", d.flow_name or "-",
                              d.step, d.decision, d.decided_by or "-", d.comment, d.value or "-",
                              "yes" if d.timed_out else "-"))
    console.print(table)


def audit(
    run: Annotated[str | None, typer.Argument(help="Flow-run id (or its first 8+ characters) or run name.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print records as JSON lines.")] = False,
) -> None:
    """Show every tool call and refusal of a run (without RUN: the recent runs)."""
    from foreman.tools.audit import audit_log

    with reporting():
        log = audit_log()
        if run is None:
            recent = log.recent_runs()
        else:
            records, decided = log.for_run(run), log.decisions(run)
    if run is None:
        table = Table("run name", "flow", "first call", "calls", "refused", "errors")
        table.add_column("run id", no_wrap=True, min_width=36)
        for row in recent:
            table.add_row(*_cells(*(row[k] for k in ("run_name", "flow_name", "first", "calls", "refused", "errors",
                                                     "run_id"))))
        console.print(table)
        return
    if not records and not decided:
        fail(f"no audit records for run {run!r}; `foreman audit` lists recent runs")
    if as_json:
        for item in [*records, *decided]:
            typer.echo(item.model_dump_json())
        return
    if decided:
        table = Table("time", "step", "decision", "by", "comment", "value", "timed out", title="human decisions")
        for d in decided:
            table.add_row(*_cells(d.at.strftime("%H:%M:%S"), d.step, d.decision, d.decided_by or "-", d.comment,
                                  d.value or "-", "yes" if d.timed_out else "-"))
        console.print(table)
    if not records:
        return
    table = Table("time", "agent", "task", "tool", "arguments", "outcome", "ms", "detail",
                  title=Text(f"run {records[0].run_name} ({records[0].run_id})"))
    for r in records:
        colour = {"ok": "green", "refused": "red", "error": "yellow"}[r.outcome]
        table.add_row(*_cells(r.at.strftime("%H:%M:%S"), r.agent or "-", r.task_name or "-", r.tool,
                              json.dumps(r.arguments)[:80]), Text(r.outcome, style=colour),
                      *_cells(f"{r.duration_ms:.0f}", r.detail[:120]))
    console.print(table)


def _cells(*values: object) -> list[Text]:
    """Table cells as text: a comment or a path with [brackets] must not be read as markup."""
    return [Text(str(v)) for v in values]
