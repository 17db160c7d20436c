"""Each agent sub-task gets the passages for its own instructions, without the engine knowing.

A `NodeRunner` that wraps another: before an agent step runs, it grounds the step's title
and instructions (plus the run's objective, which a small planner's instructions often
lack) and hands the inner runner a copy of the step whose instructions end with those
passages and the answer-only-from-them rule. The plan itself is not changed, so its
fingerprints (and resuming) are not either. Script steps pass through untouched. The
sources each step was given are kept (`sources`) for the run's result and summary.
"""

from __future__ import annotations

import threading
from typing import Any

from foreman.engine.executor import NodeRunner, Usage
from foreman.engine.grounding import DEFAULT_K, Grounding, format_passages, ground
from foreman.engine.plan import SubTask
from foreman.engine.policy import RunPolicy
from foreman.settings import Settings


class GroundedRunner:
    """`inner` with grounding context added to every agent step's instructions."""

    def __init__(self, inner: NodeRunner, policy: RunPolicy, objective: str, *, k: int = DEFAULT_K,
                 settings: Settings | None = None) -> None:
        self.inner = inner
        self.policy = policy
        self.objective = objective
        self.k = k
        self.settings = settings
        self.groundings: dict[str, Grounding] = {}
        self._lock = threading.Lock()

    def choose_agent(self, sub: SubTask, tried: list[str]) -> str | None:
        return self.inner.choose_agent(sub, tried)

    def grounded(self, sub: SubTask) -> SubTask:
        """`sub` with its passages appended to the instructions (itself when none are found)."""
        if sub.script is not None:
            return sub
        with self._lock:
            found = self.groundings.get(sub.id)
        if found is None:
            query = f"{self.objective}\n{sub.title}: {sub.instructions}"
            found = ground(query, self.policy, self.k, settings=self.settings, refresh=False)
            with self._lock:
                self.groundings[sub.id] = found
        context = format_passages(found)
        if not context:
            return sub
        return sub.model_copy(update={"instructions": f"{sub.instructions}\n\n{context}".strip()})

    def run(self, sub: SubTask, inputs: dict[str, Any], agent: str | None, max_llm_calls: int,
            usage: Usage) -> Any:
        return self.inner.run(self.grounded(sub), inputs, agent, max_llm_calls, usage)

    @property
    def sources(self) -> dict[str, list[str]]:
        """The sources each grounded step was given, by step id."""
        with self._lock:
            return {step: g.sources for step, g in self.groundings.items() if g.passages}
