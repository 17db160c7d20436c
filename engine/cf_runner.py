"""Run one sub-task as one ControlFlow task, by one agent, with exactly its scoped tools.

The agent gets no agent-level tools here: the node's grants are task-level (only
while this sub-task runs), plus the flow-level tools every agent of the run shares.
Results of the sub-tasks it depends on are its context, by id; the files the step is
given (`SubTask.files`) are a user message in its flow's history, so a vision model gets
the images and a text-only one their text. Agent choice for a
capability reads each agent's record from the run store: best success rate, then
lowest latency; an agent that keeps failing rests for a cool-down (circuit breaker),
and a retry goes to an agent not yet tried when there is one.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import controlflow as cf
from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel

from foreman.agents.models import build_chat_model
from foreman.agents.registry import AgentRegistry
from foreman.agents.schemas import BUILTIN_SCHEMAS
from foreman.cf_adapter.handlers import UsageCounter
from foreman.cf_adapter.taskrun import private_flow, run_task
from foreman.engine.attachments import Attachments, prepare_attachments
from foreman.engine.eligibility import agent_table, eligible_agents, why_nobody
from foreman.engine.executor import Usage
from foreman.engine.plan import ResultKind, SubTask
from foreman.engine.policy import RunPolicy
from foreman.engine.scripts import run_script
from foreman.engine.store import AgentStats
from foreman.engine.validate import PlanScope
from foreman.errors import PolicyError
from foreman.settings import Settings
from foreman.tools.catalog import ToolEnv, build_tools

RESULT_TYPES: dict[str, Any] = {
    ResultKind.TEXT.value: str,
    ResultKind.NUMBER.value: float,
    ResultKind.BOOLEAN.value: bool,
    ResultKind.LIST.value: list[str],
    ResultKind.OBJECT.value: dict[str, Any],
}
SCHEMAS: dict[str, type[BaseModel]] = dict(BUILTIN_SCHEMAS)


def register_schema(name: str, model: type[BaseModel]) -> None:
    """Let plans name `model` as a sub-task's result type."""
    SCHEMAS[name] = model


class ControlFlowRunner:
    """The engine's `NodeRunner` for ControlFlow agents from the registry."""

    def __init__(
        self,
        env: ToolEnv,
        agents: AgentRegistry,
        settings: Settings,
        *,
        policy: RunPolicy,
        stats: dict[str, AgentStats] | None = None,
        breaker_failures: int = 3,
        breaker_cooldown_s: float = 600.0,
        script_base: Path | None = None,
    ) -> None:
        self.env = env
        self.agents = agents
        self.settings = settings
        self.policy = policy
        self.table = agent_table(agents.specs())
        self.stats = stats or {}
        self.breaker_failures = breaker_failures
        self.breaker_cooldown_s = breaker_cooldown_s
        self.script_base = script_base or Path.cwd()
        self._models: dict[str, BaseChatModel] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Travels to a Dask worker process (FOREMAN_TASK_RUNNER=dask) without its lock and model
        clients; the worker builds its own models from the same settings."""
        state = dict(self.__dict__)
        state.pop("_lock", None)
        state["_models"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # --- who ----------------------------------------------------------------------

    def resting(self, agent: str) -> bool:
        """Circuit breaker: open after `breaker_failures` failures in a row, for the cool-down."""
        s = self.stats.get(agent)
        return bool(
            s and s.consecutive_failures >= self.breaker_failures and s.last_failure_at
            and time.time() - s.last_failure_at < self.breaker_cooldown_s
        )

    def candidates(self, sub: SubTask) -> list[str]:
        """Agents that may do `sub`, best first."""
        able = eligible_agents(sub, self.table)

        def rank(name: str) -> tuple[float, float]:
            s = self.stats.get(name)
            return (-(s.success_rate if s else 0.5), s.mean_duration_s if s else 0.0)

        return sorted(able, key=rank)

    def choose_agent(self, sub: SubTask, tried: list[str]) -> str | None:
        """The agent for this attempt; None for a script step, which no agent runs."""
        if sub.script is not None:
            return None
        ranked = self.candidates(sub)
        if not ranked:  # validation refuses such a step; reaching here means the plan skipped it
            raise PolicyError(f"{sub.id}: " + why_nobody(sub, self.table)[1])
        awake = [a for a in ranked if not self.resting(a)] or ranked
        fresh = [a for a in awake if a not in tried]
        return (fresh or awake)[0]

    # --- doing --------------------------------------------------------------------

    def _model(self, agent: str) -> BaseChatModel:
        with self._lock:
            if agent not in self._models:
                self._models[agent] = build_chat_model(self.settings, self.agents.get(agent).model)
            return self._models[agent]

    def result_type(self, sub: SubTask) -> Any:
        kind = sub.result.value if isinstance(sub.result, ResultKind) else sub.result
        return RESULT_TYPES.get(kind) or SCHEMAS[kind]

    def attachments(self, sub: SubTask) -> Attachments | None:
        """The step's files, read for the run's model. Checked when the run started, so this is
        the reading then kept (see `engine.attachments`), or the same reading done again."""
        if not sub.files:
            return None
        return prepare_attachments(sub.files, settings=self.settings, workspace=self.policy.workspace)

    def run(self, sub: SubTask, inputs: dict[str, Any], agent: str | None, max_llm_calls: int, usage: Usage) -> Any:
        if sub.script is not None or agent is None:
            return run_script(sub.script, timeout_s=sub.timeout_s, base=self.script_base, inputs=inputs)
        self.policy.require(sub.tools, f"step {sub.id}")
        spec = self.agents.get(agent)
        cf_agent = cf.Agent(
            name=spec.name, description=spec.description, instructions=spec.instructions,
            model=self._model(agent), tools=[],
        )
        task = cf.Task(
            objective=f"{sub.title}\n\n{sub.instructions}",
            name=sub.id,
            result_type=self.result_type(sub),
            context={"results_of_earlier_steps": inputs} if inputs else {},
            agents=[cf_agent],
            tools=build_tools(sub.tools, self.env),
        )
        flow = private_flow(name=sub.id, tools=build_tools(list(self.policy.flow_tools), self.env))
        attached = self.attachments(sub)
        if attached is not None:
            flow.add_events([attached.user_message()])
        value = run_task(task, audit=self.env.audit, max_llm_calls=max_llm_calls, flow=flow,
                         extra_handlers=[UsageCounter(usage)])
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def build_scope(agents: AgentRegistry, policy: RunPolicy, *, max_nodes: int = 25, max_depth: int = 10) -> PlanScope:
    """What plans of this run may use: the registry's agents, the run's policy, the result schemas."""
    return PlanScope(agents=agent_table(agents.specs()), policy=policy, schemas=list(SCHEMAS),
                     max_nodes=max_nodes, max_depth=max_depth)
