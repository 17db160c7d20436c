"""What plans and workflows share when they run: executing a validated plan inside the current
Prefect flow run, and turning its report into the result a caller (Python, the CLI, the UI) gets.

The flow's final state says in words how it ended ("completed; step upload was REJECTED by
sam: ..."), because the state message is the first thing the UI shows.

Living here, not in a flow module, means no flow imports another flow.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.client.schemas.objects import State
from prefect.states import Completed, Failed
from pydantic import BaseModel, Field

from foreman.agents.registry import AgentRegistry
from foreman.crash import hold_run
from foreman.engine.cf_runner import ControlFlowRunner
from foreman.engine.executor import Approver, Engine, Replanner
from foreman.engine.explain import ArtifactObserver
from foreman.engine.grounded_runner import GroundedRunner
from foreman.engine.plan import Plan
from foreman.engine.policy import RunPolicy
from foreman.engine.records import Budgets, NodeStatus, RunReport, RunStatus
from foreman.engine.scripts import code_paths
from foreman.engine.store import RunStore
from foreman.engine.validate import PlanScope, ValidPlan
from foreman.errors import RunFailed, UnknownRunKey
from foreman.settings import Settings
from foreman.tools.catalog import ToolEnv


class PlanRunResult(BaseModel):
    """What a run returns: the answer, and how it was reached."""

    objective: str
    status: RunStatus
    answer: str
    stopped_by: str | None = None
    run_key: str
    plan: Plan
    results: dict[str, Any] = Field(default_factory=dict)
    statuses: dict[str, NodeStatus] = Field(default_factory=dict)
    reused: list[str] = Field(default_factory=list)
    revisions: int = 0
    repaired_plan: bool = False
    llm_calls: int = 0
    tokens: int = 0
    duration_s: float = 0.0
    sources: list[str] = Field(default_factory=list, description="The passages (path:line) the answer was given.")
    route: str | None = Field(default=None, description="Why the run was answered directly or planned.")


def result_of(report: RunReport, *, objective: str, answer: str, started: float,
              repaired_plan: bool = False, sources: list[str] | None = None,
              route: str | None = None) -> PlanRunResult:
    """The caller's view of a finished run's report."""
    return PlanRunResult(
        objective=objective, status=report.status, answer=answer, stopped_by=report.stopped_by,
        run_key=report.run_key, plan=report.plan, results=report.results,
        statuses={i: o.status for i, o in report.outcomes.items()}, reused=report.reused,
        revisions=len(report.revisions), repaired_plan=repaired_plan, llm_calls=report.usage.llm_calls,
        tokens=report.usage.tokens, duration_s=time.time() - started,
        sources=list(dict.fromkeys(sources or [])), route=route,
    )


def rejections(result: PlanRunResult, reasons: dict[str, str]) -> list[str]:
    """One phrase per step a person (or the approval default) did not approve."""
    return [f"step {i} was REJECTED ({reasons.get(i, 'not approved')})"
            for i, s in result.statuses.items() if s == NodeStatus.REJECTED]


def state_message(result: PlanRunResult, reasons: dict[str, str] | None = None) -> str:
    """How the run ended, in one line for the UI: the verdict, and any rejection said outright."""
    rejected = rejections(result, reasons or {})
    if result.status != RunStatus.FAILED:
        done = sum(s == NodeStatus.COMPLETED for s in result.statuses.values())
        text = f"completed: {done} of {len(result.statuses)} steps done"
        return (text + "; " + "; ".join(rejected) if rejected else text)[:500]
    failed = [i for i, s in result.statuses.items() if s == NodeStatus.FAILED]
    why = result.stopped_by or (f"failed steps: {', '.join(failed)}" if failed else "failed")
    return "; ".join([f"{result.objective[:80]}: {why}", *rejected])[:500]


def finish(result: PlanRunResult, reasons: dict[str, str] | None = None) -> State:
    """The flow's return value, as a state whose message says how the run ended.

    A FAILED run becomes a Failed state (red in the UI, failure hooks and automations fire)
    that still carries the result, via `RunFailed.result`; any other is Completed with the
    result as its data (the flow run's persisted result). `reasons`: why steps did not run."""
    message = state_message(result, reasons)
    if result.status != RunStatus.FAILED:
        return Completed(message=message, data=result)
    return Failed(message=message, data=RunFailed(result))


def run_key_for(resume: str | None, flow_run_id: str, store: RunStore) -> str:
    """The run key: this flow run's id, or the earlier run's key being resumed, which must exist."""
    if resume is None:
        return flow_run_id
    if not store.knows_run(resume):
        recent = ", ".join(store.recent_run_keys(5)) or "none yet"
        raise UnknownRunKey(f"--resume {resume!r}: no run with this key in {store.path}; "
                            f"recent run keys: {recent}")
    return resume


class _ThreadTimeoutNotice(logging.Filter):
    """Prefect warns on every step that has a timeout that a worker thread cannot be interrupted.

    True, and said once per run instead (`execute_plan`): an orange warning on every step
    teaches people to ignore warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "running in a worker thread" not in str(record.msg)


def _quiet_thread_timeout_warning() -> None:
    task_runs = logging.getLogger("prefect.task_runs")
    if not any(isinstance(f, _ThreadTimeoutNotice) for f in task_runs.filters):
        task_runs.addFilter(_ThreadTimeoutNotice())


def execute_plan(valid: ValidPlan, run_key: str, *, policy: RunPolicy, env: ToolEnv, scope: PlanScope,
                 agents: AgentRegistry, settings: Settings, store: RunStore, budgets: Budgets,
                 approver: Approver, replanner: Replanner | None = None,
                 script_base: Path | None = None, grounded_objective: str | None = None) -> RunReport:
    """Run a validated plan inside the current flow run: the part plans and workflows share.

    With `grounded_objective`, every agent step is given the knowledge-base passages for its
    own instructions (and that objective) before it runs; the report keeps which."""
    log = get_run_logger()
    _quiet_thread_timeout_warning()
    timed = [t.id for t in valid.plan.tasks if t.timeout_s and t.script is None]
    if timed:
        log.info("timeouts on %s: an agent step runs in a worker thread, so a model call that blocks "
                 "ends at the model client's own timeout before the step's timeout can stop it",
                 ", ".join(timed))
    if not policy.allow_code:  # a step that rewrites what a script step runs would be running code
        guarded = code_paths(valid.plan.tasks, script_base or Path.cwd())
        env = env.model_copy(update={"workspace": env.workspace.model_copy(update={"runs_as_code": guarded})})
    runner = ControlFlowRunner(env, agents, settings, policy=policy, stats=store.agent_stats(),
                               script_base=script_base)
    grounded = GroundedRunner(runner, policy, grounded_objective, settings=settings) if grounded_objective else None
    engine = Engine(grounded or runner, scope, store, budgets, replanner=replanner, observer=ArtifactObserver(),
                    approver=approver)
    with hold_run(run_key):  # one live process per run key; marks a dead earlier holder CRASHED
        report = engine.run(valid, run_key)
    if grounded is not None:
        report.sources = grounded.sources
    if report.reused:
        log.info("reused finished sub-tasks: %s", ", ".join(report.reused))
    return report


def not_run_reasons(report: RunReport) -> dict[str, str]:
    """Why each step that did not complete did not: for the state message and the summary."""
    return {i: (o.reason or o.error or "") for i, o in report.outcomes.items() if o.status != NodeStatus.COMPLETED}
