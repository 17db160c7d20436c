"""Explain a run in the Prefect UI: the plan (rationale, table, Mermaid graph), live progress,
each revision, and a final summary with agents, durations, retries, model calls and tokens.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from foreman.engine.executor import NodeStatus, Revision, RunReport
from foreman.engine.plan import Plan

logger = logging.getLogger("foreman.engine")

STATUS_STYLE = {
    NodeStatus.PENDING: "fill:#eee,stroke:#999",
    NodeStatus.RUNNING: "fill:#fff3c4,stroke:#d4a400",
    NodeStatus.COMPLETED: "fill:#d6f5d6,stroke:#2e8b2e",
    NodeStatus.FAILED: "fill:#f8d0d0,stroke:#c00",
    NodeStatus.SKIPPED: "fill:#e8e8ff,stroke:#66c,stroke-dasharray: 4 2",
}


def _label(text: str) -> str:
    return text.replace('"', "'").replace("\n", " ")[:60]


def mermaid(plan: Plan, statuses: dict[str, NodeStatus] | None = None) -> str:
    """The sub-task graph as Mermaid, coloured by status when given."""
    lines = ["graph TD"]
    for sub in plan.tasks:
        who = f"script {sub.script.path}" if sub.script else (sub.agent or f"any {sub.capability}")
        lines.append(f'    {sub.id}["{sub.id}: {_label(sub.title)}<br/><small>{who}</small>"]')
    for sub in plan.tasks:
        for dep in sub.depends_on:
            edge = f"-- {_label(sub.condition)} -->" if sub.condition else "-->"
            lines.append(f"    {dep} {edge} {sub.id}")
    for status, style in STATUS_STYLE.items():
        members = [i for i, s in (statuses or {}).items() if s == status and i in plan.ids]
        if members:
            lines.append(f"    classDef {status.value.lower()} {style}")
            lines.append(f"    class {','.join(members)} {status.value.lower()}")
    return "\n".join(lines)


def plan_markdown(plan: Plan, title: str = "Plan") -> str:
    rows = ["| id | title | agent | tools | depends on | condition | approval |", "|---|---|---|---|---|---|---|"]
    for t in plan.tasks:
        rows.append(
            f"| {t.id} | {t.title} | {('script: ' + t.script.path) if t.script else (t.agent or 'capability: ' + str(t.capability))} | {', '.join(t.tools) or '-'}"
            f" | {', '.join(t.depends_on) or '-'} | {t.condition or '-'} | {'yes' if t.approval else '-'} |"
        )
    return (
        f"# {title}\n\n**Objective:** {plan.objective}\n\n**Why this plan:** {plan.rationale or '(none given)'}\n\n"
        f"On failure: `{plan.on_failure}`\n\n" + "\n".join(rows) + f"\n\n```mermaid\n{mermaid(plan)}\n```\n"
    )


def summary_rows(report: RunReport) -> list[dict[str, Any]]:
    rows = []
    for sub in report.plan.tasks:
        o = report.outcomes[sub.id]
        rows.append({
            "sub-task": sub.id, "status": o.status.value, "agent": o.agent or "-",
            "duration_s": round(o.duration_s, 2), "retries": max(o.attempts - 1, 0),
            "llm_calls": o.llm_calls, "tokens": o.tokens,
            "note": "reused" if o.reused else (o.error or o.reason or "")[:200],
        })
    rows.append({
        "sub-task": "TOTAL", "status": report.status.value, "agent": "-",
        "duration_s": round((report.finished or report.started) - report.started, 2),
        "retries": sum(r["retries"] for r in rows), "llm_calls": report.usage.llm_calls,
        "tokens": report.usage.tokens, "note": report.stopped_by or "",
    })
    return rows


class ArtifactObserver:
    """Writes the run's story as Prefect artifacts on the current flow run."""

    def __init__(self) -> None:
        self._progress_id: Any = None

    def _safe(self, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as exc:  # noqa: BLE001  (observability must never break a run)
            logger.warning("could not write artifact: %s", exc)
            return None

    def on_plan(self, report: RunReport) -> None:
        self._safe(create_markdown_artifact, key="plan", markdown=plan_markdown(report.plan),
                   description=f"Plan for: {report.objective[:200]}")
        self._progress_id = self._safe(create_progress_artifact, progress=0.0, key="progress",
                                       description="Sub-tasks finished")
        if report.reused:
            logger.info("resuming: reusing finished sub-tasks %s", ", ".join(report.reused))

    def on_progress(self, report: RunReport) -> None:
        done = sum(o.status not in (NodeStatus.PENDING, NodeStatus.RUNNING) for o in report.outcomes.values())
        if self._progress_id:
            self._safe(update_progress_artifact, artifact_id=self._progress_id,
                       progress=100.0 * done / max(len(report.outcomes), 1))

    def on_revision(self, report: RunReport, revision: Revision) -> None:
        n = len(report.revisions)
        self._safe(
            create_markdown_artifact, key=f"plan-revision-{n}",
            markdown=f"Revision {n} after **{revision.after_failure_of}** failed: {revision.error}\n\n"
                     + plan_markdown(revision.plan, title=f"Plan, revision {n}"),
            description=f"Plan revision {n}",
        )

    def on_finish(self, report: RunReport) -> None:
        statuses = {i: o.status for i, o in report.outcomes.items()}
        self._safe(create_table_artifact, key="summary", table=summary_rows(report),
                   description=f"{report.status.value}: {report.stopped_by or 'all sub-tasks settled'}")
        self._safe(create_markdown_artifact, key="plan-final",
                   markdown=f"# Final graph ({report.status.value})\n\n```mermaid\n{mermaid(report.plan, statuses)}\n```\n")
