"""The one renderer for a finished run, as a table for people or as JSON for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.table import Table
from rich.text import Text

from foreman.cli._output import console, ui_hint
from foreman.engine.records import NodeStatus, RunStatus
from foreman.engine.runs import PlanRunResult

STATUS_STYLE = {NodeStatus.COMPLETED: "green", NodeStatus.FAILED: "red", NodeStatus.REJECTED: "yellow",
                NodeStatus.SKIPPED: "dim"}


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
        shown = str(result.results.get(sub.id, ""))
        table.add_row(Text(sub.id), Text(status.value if status else "-", style=STATUS_STYLE.get(status, "")),
                      Text(shown[:100] + ("…" if len(shown) > 100 else "")))
    console.print(table)
    if result.reused:
        console.print(Text(f"reused finished {what}s: {', '.join(result.reused)}"))
    colour = "green" if result.status == RunStatus.COMPLETED else "red"
    console.print(Text.assemble((result.status.value, colour),
                                f" (stopped by {result.stopped_by})" if result.stopped_by else ""))
    console.print(Text.assemble(("answer: ", "bold"), result.answer))
    if result.sources:
        console.print(Text.assemble(("sources: ", "bold"), ", ".join(result.sources)))
    if result.route:
        console.print(Text(f"route: {result.route}", style="dim"))
    console.print(Text(f"{result.llm_calls} model calls, {result.tokens} tokens, {result.duration_s:.1f} s; "
                       f"run key {result.run_key} (resume with --resume); audit: foreman audit {flow_run_id}",
                       style="dim"))
    console.print(Text(ui_hint(flow_run_id), style="dim"))
