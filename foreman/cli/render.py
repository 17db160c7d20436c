"""The one renderer for a finished run, as a table for people or as JSON for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.table import Table

from foreman.cli._output import console, ui_hint
from foreman.engine.records import RunStatus
from foreman.engine.runs import PlanRunResult


def finished_result(state: Any) -> PlanRunResult:
    """The result a flow-run state carries: the returned one, or the one a FAILED run keeps."""
    from foreman.errors import RunFailed

    try:
        return state.result()
    except RunFailed as exc:
        return exc.result


def result_json(result: PlanRunResult, flow_run_id: Any) -> str:
    """Everything a script needs: answer, statuses, results, usage, run key and flow-run id."""
    data = result.model_dump(mode="json")
    data["flow_run_id"] = str(flow_run_id)
    return json.dumps(data, indent=2)


def render_result(result: PlanRunResult, flow_run_id: Any, *, as_json: bool = False, what: str = "sub-task") -> None:
    if as_json:
        sys.stdout.write(result_json(result, flow_run_id) + "\n")
        return
    table = Table(what, "status", "result")
    for sub in result.plan.tasks:
        status = result.statuses.get(sub.id)
        table.add_row(sub.id, status.value if status else "-", str(result.results.get(sub.id, ""))[:100])
    console.print(table)
    if result.reused:
        console.print(f"reused finished {what}s: {', '.join(result.reused)}")
    colour = "green" if result.status == RunStatus.COMPLETED else "red"
    console.print(f"[{colour}]{result.status.value}[/{colour}]"
                  + (f" (stopped by {result.stopped_by})" if result.stopped_by else ""))
    console.print(f"[bold]answer:[/bold] {result.answer}", highlight=False)
    console.print(f"[dim]{result.llm_calls} model calls, {result.tokens} tokens, {result.duration_s:.1f} s; "
                  f"run key {result.run_key} (resume with --resume); audit: foreman audit {flow_run_id}[/dim]")
    console.print(f"[dim]{ui_hint()}[/dim]")
