"""The agent registry (Level 1): named agents any flow can use by name.

An agent is a system prompt plus a model plus its settings, a list of capabilities
(what the planner may pick it for) and its agent-level tools (usable by this agent
in any task). The registry holds specs, which are plain data; `build_agent` turns a
spec into a ControlFlow agent for one run, with its tools bound to that run's guards.
"""

from __future__ import annotations

from collections.abc import Iterable

import controlflow as cf
from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, Field

from foreman import cf_adapter
from foreman.agents.models import ModelSettings, build_chat_model
from foreman.errors import UnknownAgentError
from foreman.settings import Settings, get_settings
from foreman.tools.catalog import ToolEnv, build_tools, get_spec


class AgentSpec(BaseModel):
    """Who an agent is. Plain data: safe to list, show to a planner, or store."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    description: str
    instructions: str
    capabilities: list[str] = Field(default_factory=list)
    tools: list[str] = Field(default_factory=list, description="Agent-level tools, by catalogue name.")
    model: ModelSettings = Field(default_factory=ModelSettings)




DEFAULT_AGENTS = [
    AgentSpec(
        name="generalist",
        description="Handles any small task that needs no special tools: answer, decide, summarize.",
        instructions="You are a careful assistant. Answer exactly what the task asks, briefly.",
        capabilities=["general", "summarize", "decide"],
    ),
    AgentSpec(
        name="researcher",
        description="Finds and reads information: searches the knowledge base, lists, searches and reads "
                    "workspace files, fetches pages.",
        instructions=(
            "You research. Look at the files or pages before answering, quote what you found, "
            "and say which file or URL each fact came from."
        ),
        capabilities=["research", "read_files", "search", "web"],
        tools=["search_knowledge", "list_files", "read_file", "search_files", "fetch_url"],
    ),
    AgentSpec(
        name="file-searcher",
        description="Finds which workspace files relate to a question; lists files, reads only when a task allows it.",
        instructions=(
            "You find files. Judge relevance from file names and contents you were allowed to read; "
            "return paths exactly as the tools print them."
        ),
        capabilities=["search", "read_files"],
        tools=["list_files"],
    ),
    AgentSpec(
        name="coder",
        description="Writes and runs small Python programs in a sandbox to compute or check things.",
        instructions=(
            "You solve problems by writing short Python programs and running them with run_python. "
            "Report the program's actual output, not what you expect it to print."
        ),
        capabilities=["code", "compute", "data"],
        tools=["run_python"],
        model=ModelSettings(temperature=0.0),
    ),
    AgentSpec(
        name="writer",
        description="Writes clear prose: reports, summaries, messages; saves files when the run allows writing.",
        instructions="You write plainly and concretely for a busy reader. No filler.",
        capabilities=["write", "summarize", "report"],
        tools=["write_file"],
        model=ModelSettings(temperature=0.7),
    ),
    AgentSpec(
        name="reviewer",
        description="Checks a draft against its sources and says whether it is ready to publish, and what to fix.",
        instructions=(
            "You review. Check every claim of the draft against the sources given or the workspace files; "
            "ready is true only if nothing is wrong or missing. Name each problem in the notes."
        ),
        capabilities=["review", "check"],
        tools=["read_file", "search_files"],
        model=ModelSettings(temperature=0.0),
    ),
]


class AgentRegistry:
    """Named agent specs. Add your own with `register`."""

    def __init__(self, specs: Iterable[AgentSpec] = ()) -> None:
        self._specs: dict[str, AgentSpec] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: AgentSpec) -> AgentSpec:
        for tool in spec.tools:
            get_spec(tool)  # unknown tool names fail at registration, not mid-run
        self._specs[spec.name] = spec
        return spec

    def get(self, name: str) -> AgentSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownAgentError(name, self._specs) from None

    def names(self) -> list[str]:
        return list(self._specs)

    def specs(self) -> list[AgentSpec]:
        return list(self._specs.values())

    def with_capability(self, capability: str) -> list[AgentSpec]:
        return [s for s in self._specs.values() if capability in s.capabilities]


registry = AgentRegistry(DEFAULT_AGENTS)


def build_agent(
    name: str,
    env: ToolEnv,
    *,
    model: BaseChatModel | None = None,
    settings: Settings | None = None,
    extra_tools: list[str] | None = None,
    agents: AgentRegistry | None = None,
) -> cf.Agent:
    """A ControlFlow agent for one run: its instructions, its model, its tools behind `env`'s guards.

    `model` overrides the configured model (tests pass a scripted one).
    """
    spec = (agents or registry).get(name)
    settings = settings or get_settings()
    cf_adapter.apply()  # ControlFlow patched and version-checked before any agent exists
    return cf.Agent(
        name=spec.name,
        description=spec.description,
        instructions=spec.instructions,
        tools=build_tools([*spec.tools, *(extra_tools or [])], env),
        model=model if model is not None else build_chat_model(settings, spec.model),
    )
