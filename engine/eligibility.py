"""Who may run a step: the one answer the validator, the approval rule and the runner share.

An agent may run a step when it is the named agent or has the named capability, and it
may be granted every tool the step asks for. The validator refuses a step nobody may
run (with why), the runner picks among exactly these agents, and the planner's strict
schema offers each agent only the tools it may be granted in this run. Deciding this
in one place is what keeps a plan that passed validation from failing mid-run with
"no agent available".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, Field

from foreman.engine.plan import SubTask
from foreman.engine.policy import RunPolicy


class AgentInfo(BaseModel):
    """What eligibility needs to know of an agent."""

    capabilities: list[str] = Field(default_factory=list)
    tools: list[str] = Field(default_factory=list, description="Tools this agent may be granted.")


def agent_table(specs: Iterable[Any]) -> dict[str, AgentInfo]:
    """AgentInfo by name, from registry specs (anything with name, capabilities, tools)."""
    return {s.name: AgentInfo(capabilities=list(s.capabilities), tools=list(s.tools)) for s in specs}


def grantable(info: AgentInfo, policy: RunPolicy) -> list[str]:
    """The tools `info`'s agent may be granted in a run under `policy`."""
    return [t for t in info.tools if policy.permits(t)]


def eligible_agents(step: SubTask, agents: Mapping[str, AgentInfo]) -> list[str]:
    """Agents that may run `step` with its grants, in registry order; none for a script step."""
    if step.script is not None:
        return []
    names = [step.agent] if step.agent else list(agents)
    return [
        n for n in names
        if n in agents
        and (step.capability is None or step.capability in agents[n].capabilities)
        and set(step.tools) <= set(agents[n].tools)
    ]


def why_nobody(step: SubTask, agents: Mapping[str, AgentInfo]) -> tuple[str, str]:
    """(field, message) saying why no agent may run `step`, and what would fix it."""
    known = ", ".join(sorted(agents))
    if step.agent is None and step.capability is None:
        return "agent", f"name an agent ({known}) or a capability"
    if step.agent is not None and step.agent not in agents:
        return "agent", f"unknown agent {step.agent!r}; known agents: {known}"
    if step.agent is not None and step.capability and step.capability not in agents[step.agent].capabilities:
        return "capability", f"agent {step.agent!r} lacks capability {step.capability!r}"
    if step.agent is None and not any(step.capability in a.capabilities for a in agents.values()):
        capabilities = ", ".join(sorted({c for a in agents.values() for c in a.capabilities}))
        return "capability", f"no agent has capability {step.capability!r}; known: {capabilities}"
    who = step.agent or f"any one agent with capability {step.capability!r}"
    if step.agent is None:
        able = [n for n, a in agents.items() if step.capability in a.capabilities]
        offers = "; ".join(f"{n} may use {', '.join(agents[n].tools) or 'no tools'}" for n in able)
        return "tools", (f"no single agent with capability {step.capability!r} may use all of "
                         f"{', '.join(step.tools)} ({offers}); split the step or name an agent")
    missing = sorted(set(step.tools) - set(agents[step.agent].tools))
    listed = ", ".join(repr(t) for t in missing)
    return "tools", (f"tool {listed} is outside the scope of {who}; "
                     "give the sub-task to an agent that may use it")
