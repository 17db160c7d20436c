"""Explain a run in the Prefect UI: the plan (rationale, table, Mermaid graph), live progress,
each revision, a final summary with agents, durations, retries, model calls and tokens, and
the answer.

Steps that never ran (skipped, or rejected at an approval point) get a task run of their own
in a state named after why, so the run's graph in the UI shows every step of the plan.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NONE as NO_CACHE
from prefect.states import Cancelled

from foreman.engine.executor import NodeStatus, Revision, RunReport, RunStatus
from foreman.engine.plan import Plan
from foreman.engine.progress import Progress, publish

logger = logging.getLogger("foreman.engine")

STATUS_STYLE = {
    NodeStatus.PENDING: "fill:#eee,stroke:#999",
    NodeStatus.RUNNING: "fill:#fff3c4,stroke:#d4a400",
    NodeStatus.COMPLETED: "fill:#d6f5d6,stroke:#2e8b2e",
    NodeStatus.FAILED: "fill:#f8d0d0,stroke:#c00",
    NodeStatus.SKIPPED: "fill:#e8e8ff,stroke:#66c,stroke-dasharray: 4 2",
    NodeStatus.REJECTED: "fill:#ffe0c2,stroke:#c60,stroke-dasharray: 4 2",
}
NOT_RUN = {NodeStatus.SKIPPED: "Skipped", NodeStatus.REJECTED: "Rejected"}


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


def answer_markdown(objective: str, answer: str, sources: list[str] | None = None) -> str:
    """The answer as a person reads it in the UI: the question, the answer, where it came from."""
    cited = "".join(f"\n- {s}" for s in sources or [])
    return (f"# Answer\n\n**Objective:** {objective}\n\n{answer}\n"
            + (f"\n**From:**{cited}\n" if cited else ""))


def write_answer(objective: str, answer: str, sources: list[str] | None = None) -> None:
    """The "answer" artifact of a planner or chat run."""
    _safe(create_markdown_artifact, key="answer", markdown=answer_markdown(objective, answer, sources),
          description=answer[:300] + ("…" if len(answer) > 300 else ""))  # the card shows it


def write_query(answered: Any) -> None:
    """The "query" artifact of a query-route run: the SQL, the tables it was shown, its rows and their sources."""
    from foreman.engine.query import markdown_table

    parts = [f"**Query** over {', '.join(answered.tables)}:\n\n```sql\n{answered.sql}\n```",
             f"**Result** ({len(answered.rows)} row(s){', cut' if answered.truncated else ''}):\n\n"
             + markdown_table(answered.columns, answered.rows[:50])]
    if answered.evidence:
        parts.append("**Source rows**:\n\n" + "\n".join(f"- `{line}`" for line in answered.evidence))
    if answered.refusals:
        parts.append("**Tries refused or failed**:\n\n" + "\n".join(f"- {r}" for r in answered.refusals))
    if answered.written:
        parts.append(f"**Wrote** `{answered.written}`.")
    _safe(create_markdown_artifact, key="query", markdown="\n\n".join(parts), description=answered.sql[:300])


def write_attachments(markdown: str, description: str) -> None:
    """The "attachments" artifact of a run given files: each file, its kind and how it was read."""
    _safe(create_markdown_artifact, key="attachments", markdown=markdown, description=description[:300])


def _safe(fn: Any, **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except Exception as exc:  # noqa: BLE001  (observability must never break a run)
        logger.warning("could not write artifact: %s", exc)
        return None


class _NotRunIsNoError(logging.Filter):
    """Prefect logs any final state but Completed as an ERROR; a step that did not run is not one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and any(f"Finished in state {name}(" in str(record.msg)
                                                   for name in NOT_RUN.values()):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


logging.getLogger("prefect.task_runs").addFilter(_NotRunIsNoError())


@task(name="not run", cache_policy=NO_CACHE, persist_result=False)
def _not_run(state_name: str, reason: str) -> Any:
    """Stands for a step that never ran, so the graph shows it: grey, named Skipped or Rejected."""
    return Cancelled(name=state_name, message=reason)


class ProgressArtifact:
    """The run's "progress" artifact, kept current from this flow run's progress events.

    Created when the run starts, so the UI shows what happens from the first second
    ("planning: model call 1 of at most 6"), not only once the plan exists."""

    def __init__(self, run_id: str | None, text: str = "starting") -> None:
        self.run_id = run_id
        self.percent = 0.0
        self.artifact_id = _safe(create_progress_artifact, progress=0.0, key="progress", description=text)

    def __call__(self, progress: Progress) -> None:
        if progress.run_id != self.run_id or self.artifact_id is None:
            return
        self.percent = progress.percent if progress.percent is not None else self.percent
        _safe(update_progress_artifact, artifact_id=self.artifact_id, progress=self.percent,
              description=progress.text[:500])


def running_text(report: RunReport) -> Progress:
    settled = [o for o in report.outcomes.values() if o.status not in (NodeStatus.PENDING, NodeStatus.RUNNING)]
    now = [i for i, o in report.outcomes.items() if o.status == NodeStatus.RUNNING]
    total = max(len(report.outcomes), 1)
    text = f"running: {len(settled)} of {total} steps done" + (f"; now: {', '.join(now)}" if now else "")
    return Progress(phase="running", text=text, percent=100.0 * len(settled) / total)


class ArtifactObserver:
    """Writes the run's story as Prefect artifacts on the current flow run, and tells listeners."""

    def __init__(self) -> None:
        self._shown_not_run: set[str] = set()

    def on_plan(self, report: RunReport) -> None:
        _safe(create_markdown_artifact, key="plan", markdown=plan_markdown(report.plan),
              description=f"Plan for: {report.objective[:200]}")
        if report.reused:
            logger.info("resuming: reusing finished sub-tasks %s", ", ".join(report.reused))
        publish(running_text(report))

    def on_progress(self, report: RunReport) -> None:
        if report.status != RunStatus.PAUSED:  # the approver says who waits for what
            publish(running_text(report))
        self._show_not_run(report)

    def on_revision(self, report: RunReport, revision: Revision) -> None:
        n = len(report.revisions)
        _safe(
            create_markdown_artifact, key=f"plan-revision-{n}",
            markdown=f"Revision {n} after **{revision.after_failure_of}** failed: {revision.error}\n\n"
                     + plan_markdown(revision.plan, title=f"Plan, revision {n}"),
            description=f"Plan revision {n}",
        )

    def on_finish(self, report: RunReport) -> None:
        self._show_not_run(report)
        statuses = {i: o.status for i, o in report.outcomes.items()}
        _safe(create_table_artifact, key="summary", table=summary_rows(report),
              description=f"{report.status.value}: {report.stopped_by or 'all sub-tasks settled'}")
        _safe(create_markdown_artifact, key="plan-final", description=f"Final graph: {report.status.value}",
              markdown=f"# Final graph ({report.status.value})\n\n```mermaid\n{mermaid(report.plan, statuses)}\n```\n")
        publish(Progress(phase="running", text=f"steps finished: {report.status.value}", percent=100.0))

    def _show_not_run(self, report: RunReport) -> None:
        for sub in report.plan.tasks:
            outcome = report.outcomes.get(sub.id)
            if outcome is None or outcome.status not in NOT_RUN or outcome.started or sub.id in self._shown_not_run:
                continue
            self._shown_not_run.add(sub.id)
            _safe(_not_run.with_options(task_run_name=f"{sub.id}: {sub.title}"[:100]),
                  state_name=NOT_RUN[outcome.status], reason=(outcome.reason or outcome.error or "")[:500],
                  return_state=True)
