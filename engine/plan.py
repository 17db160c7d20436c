"""A plan is data: sub-tasks, who does them, with what, after what, under which condition.

Whoever writes it (the planner agent, or a person in a workflow file), it is this
`Plan`, checked by the same validator and run by the same engine. Nothing here
knows about models, Prefect or ControlFlow.
"""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, Field

ID_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"


class ResultKind(str, Enum):
    """What a sub-task returns. Later conditions and agents see the value as this type."""

    TEXT = "text"
    NUMBER = "number"
    BOOLEAN = "boolean"
    LIST = "list"
    OBJECT = "object"


class ScriptStep(BaseModel):
    """Run an existing script or command instead of an agent (the user's own chores)."""

    path: str = Field(min_length=1, description="A Python script (run with this Python) or an executable.")
    args: list[str] = Field(default_factory=list)
    cwd: str | None = Field(default=None, description="Working directory (default: the workflow file's folder).")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables.")


RUN_ONLY_FIELDS = {"retries", "retry_backoff_s", "timeout_s", "approval", "ask", "on_reject", "approval_default"}


class SubTask(BaseModel):
    """One node of the plan: one ControlFlow task run by one agent with exactly its tools."""

    id: str = Field(pattern=ID_PATTERN, description="Short snake_case name; conditions refer to results by it.")
    title: str = Field(min_length=1, max_length=120)
    instructions: str = Field(min_length=1, description="What the agent must do, in full.")
    agent: str | None = Field(default=None, description="Registry name of the agent. Or give `capability`.")
    capability: str | None = Field(default=None, description="Pick the best agent with this capability.")
    script: ScriptStep | None = Field(default=None, description="Run this script instead of an agent.")
    tools: list[str] = Field(default_factory=list, description="Tools granted to this sub-task only.")
    files: list[str] = Field(
        default_factory=list, max_length=20,
        description="Files this step's agent is given (workspace paths or URLs on the allowed hosts): their text, "
        "and images to a model that sees. Read when the run starts, so a bad file stops it before anything runs.",
    )
    depends_on: list[str] = Field(default_factory=list)
    result: ResultKind | str = Field(
        default=ResultKind.TEXT, description="A ResultKind, or the name of a registered schema."
    )
    condition: str | None = Field(
        default=None,
        description="Run only if this expression over earlier results is true, e.g. `count > 3 and ok`.",
    )
    approval: bool = Field(default=False, description="A person must approve before it runs.")
    ask: str | None = Field(
        default=None, max_length=300,
        description="A question for the approver; the typed answer reaches the step as input `_approval.value`.",
    )
    on_reject: Literal["skip", "fail", "replan"] = Field(
        default="skip",
        description="When the person says no: skip this step and its dependants, fail it (the run's "
        "on_failure rule applies), or ask the planner for another way (planner runs; otherwise it fails).",
    )
    approval_default: Literal["reject", "approve"] = Field(
        default="reject", description="The decision taken when nobody answers before the approval timeout."
    )
    retries: int = Field(default=1, ge=0, le=5)
    retry_backoff_s: float = Field(default=1.0, ge=0, le=300)
    timeout_s: float = Field(default=300.0, gt=0, le=3600)
    max_llm_calls: int = Field(default=6, ge=1, le=50)

    def fingerprint(self) -> str:
        """Changes when anything that affects the sub-task's result changes. A step without
        files has the fingerprint it had before steps took files (so resuming still matches)."""
        return _digest(self.model_dump(mode="json", exclude=RUN_ONLY_FIELDS | (set() if self.files else {"files"})))


class Plan(BaseModel):
    """A sub-task graph for one objective, with the reasoning behind it."""

    objective: str = ""
    rationale: str = Field(default="", description="Why this breakdown: shown to the user.")
    tasks: list[SubTask] = Field(default_factory=list)
    on_failure: Literal["fail_fast", "continue"] = Field(
        default="fail_fast",
        description="fail_fast: stop scheduling after a sub-task fails for good; continue: skip only its dependants.",
    )

    def task(self, task_id: str) -> SubTask:
        for sub in self.tasks:
            if sub.id == task_id:
                return sub
        raise KeyError(task_id)

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.tasks]

    def fingerprint(self) -> str:
        return _digest(self.model_dump(mode="json", exclude={"rationale"}))


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
