"""The records a run is made of: statuses, budgets, usage, each step's outcome, the run's report.

Plain pydantic data shared by the engine, the flows that report on it, the CLI and the
run store, so none of them needs the executor to name a status.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, Field

from foreman.engine.plan import Plan


class NodeStatus(str, Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    REJECTED = "REJECTED"  # a person (or the approval default) said no; its on_reject rule was skip


class RunStatus(str, Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class Budgets(BaseModel):
    """Limits for one run. Hitting one stops scheduling cleanly and keeps every finished result."""

    max_llm_calls: int = Field(default=200, ge=1)
    max_tokens: int = Field(default=2_000_000, ge=1)
    max_wall_s: float = Field(default=1800.0, gt=0)
    max_replans: int = Field(default=2, ge=0)
    max_concurrency: int = Field(default=8, ge=1, le=64)


class Usage(BaseModel):
    llm_calls: int = 0
    tokens: int = 0


class Attempts(BaseModel):
    """One node's attempts so far: who tried, what they used.

    Filled where the node runs (each Prefect retry appends) and carried back on its result,
    or on the exception that failed it: under FOREMAN_TASK_RUNNER=dask the node runs in
    another process, whose copy is all there is, and the run's budgets need its counts."""

    tried: list[str | None] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)

    @property
    def agents(self) -> list[str]:
        return [a for a in self.tried if a is not None]


class NodeResult(BaseModel):
    value: Any = None
    agent: str | None = None
    attempts: Attempts | None = Field(default=None, description="As counted where the node ran.")


class NodeOutcome(BaseModel):
    id: str
    title: str
    status: NodeStatus = NodeStatus.PENDING
    agent: str | None = None
    result: Any = None
    error: str | None = None
    reason: str | None = Field(default=None, description="Why it was skipped or reused.")
    attempts: int = 0
    agents_tried: list[str] = Field(default_factory=list)
    llm_calls: int = 0
    tokens: int = 0
    started: float | None = None
    finished: float | None = None
    reused: bool = False

    @property
    def duration_s(self) -> float:
        return (self.finished - self.started) if self.started and self.finished else 0.0


class Revision(BaseModel):
    after_failure_of: str
    error: str
    plan: Plan


class RunReport(BaseModel):
    run_key: str
    objective: str
    status: RunStatus
    stopped_by: str | None = None
    plan: Plan
    outcomes: dict[str, NodeOutcome]
    revisions: list[Revision] = Field(default_factory=list)
    started: float
    finished: float | None = None
    usage: Usage = Field(default_factory=Usage)
    answer: str | None = None
    sources: dict[str, list[str]] = Field(default_factory=dict,
                                          description="Per step, the passages (path:line) it was given.")

    @property
    def results(self) -> dict[str, Any]:
        return {i: o.result for i, o in self.outcomes.items() if o.status == NodeStatus.COMPLETED}

    @property
    def reused(self) -> list[str]:
        return [i for i, o in self.outcomes.items() if o.reused]


class ReplanRequest(BaseModel):
    objective: str
    plan: Plan
    finished: dict[str, Any]
    failed: str
    error: str


class ApprovalAnswer(BaseModel):
    """What a person decided at an approval point (or the default, when nobody answered)."""

    approved: bool
    comment: str = ""
    value: str = Field(default="", description="The typed answer to the step's `ask`, if any.")
    decided_by: str | None = None
    timed_out: bool = False
    answered: bool = Field(default=True, description="False when the run was resumed with no answer at all.")


def one_step_report(run_key: str, plan: Plan, *, text: str, calls: int, tokens: int, sources: list[str],
                    started: float, attempts: int = 1) -> RunReport:
    """The report of a run one Python-driven step answered (a lookup, a query, a script): the same
    shape as a planned run's, so its result, the run store and the UI need no special case."""
    import time

    step = plan.tasks[0]
    outcome = NodeOutcome(id=step.id, title=step.title, status=NodeStatus.COMPLETED, agent=step.agent,
                          result=text, attempts=attempts, llm_calls=calls, tokens=tokens, started=started,
                          finished=time.time())
    return RunReport(run_key=run_key, objective=plan.objective, status=RunStatus.COMPLETED, plan=plan,
                     outcomes={step.id: outcome}, started=started, finished=time.time(),
                     usage=Usage(llm_calls=calls, tokens=tokens), answer=text, sources={step.id: sources})
