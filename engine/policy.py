"""The run policy: what one run may use, decided once, then only read.

A person starting a run (CLI flags, flow parameters, settings) decides which tools its
steps may be granted, whether they may write files or run code, which tools need a
person's approval first, and which folder the file tools see. `RunPolicy.build` turns
those inputs into one frozen value; the validator, the tools' environment (`ToolEnv`)
and the node runner read it, and nothing else decides. A workflow file may `narrow` it
to the tools it names, never widen it: a file that grants `run_python` on a run started
without `allow_code` is refused before anything runs, naming the flag.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from foreman.errors import ConfigurationError, PolicyError, UnknownToolError
from foreman.settings import Settings, get_settings
from foreman.tools.catalog import CATALOG, ToolEnv
from foreman.tools.knowledge.bases import check_name, workspace_base
from foreman.tools.knowledge.tool import KnowledgeScope
from foreman.tools.memory.scope import MemoryScope, check_user

DEFAULT_TOOLS: tuple[str, ...] = ("list_files", "read_file", "search_files", "search_knowledge", "fetch_url",
                                 "notify_user")
FLOW_TOOLS: tuple[str, ...] = ("notify_user",)


class Permission(BaseModel):
    """A switch a person must turn on before any step may use tools of one capability."""

    field: str
    flag: str
    parameter: str


PERMISSIONS: dict[str, Permission] = {
    "write_files": Permission(field="allow_write", flag="--allow-write", parameter="allow_write=True"),
    "run_code": Permission(field="allow_code", flag="--allow-code", parameter="allow_code=True"),
}


def permission_for(tool: str) -> Permission | None:
    """The switch `tool` needs, or None when listing it as allowed is enough."""
    return PERMISSIONS.get(CATALOG[tool].capability) if tool in CATALOG else None


def _known(names: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(names))
    for name in names:
        if name not in CATALOG:
            raise UnknownToolError(name, CATALOG)
    return names


class RunPolicy(BaseModel):
    """What one run may use. Frozen: build a new one (`build`, `narrow`) instead of changing it."""

    model_config = ConfigDict(frozen=True)

    workspace: Path
    allowed_tools: tuple[str, ...]
    allow_write: bool = False
    allow_code: bool = False
    approval_tools: tuple[str, ...] = ()
    flow_tools: tuple[str, ...] = ()
    # The knowledge bases `search_knowledge` and grounding may read; by default the run's
    # own workspace index (`workspace_base(workspace)`), which grounding keeps up to date.
    knowledge_bases: tuple[str, ...] = ()
    # Whose memory the memory tools read and write (a flow parameter, never a tool argument);
    # None: no memory at all.
    user: str | None = None

    @classmethod
    def build(
        cls,
        *,
        settings: Settings | None = None,
        workspace: Path | str | None = None,
        allowed_tools: Iterable[str] | None = None,
        allow_write: bool = False,
        allow_code: bool = False,
        approval_tools: Iterable[str] | None = None,
        check_workspace: bool = True,
        knowledge_bases: Iterable[str] | None = None,
        user: str | None = None,
    ) -> RunPolicy:
        """The policy for a run, from settings and what the person passed.

        `allowed_tools` defaults to `DEFAULT_TOOLS`; `allow_write` / `allow_code` add the
        write and code tools. Naming a write or code tool without its switch is an error
        rather than a silent drop, so a person sees why a step could not write.
        """
        settings = settings or get_settings()
        root = Path(workspace or settings.workspace).expanduser().resolve()
        if check_workspace and not root.is_dir():
            raise ConfigurationError(
                f"workspace {str(root)!r} is not a folder; pass an existing folder (--workspace or FOREMAN_WORKSPACE)")
        switches = {"allow_write": allow_write, "allow_code": allow_code}
        tools = _known(DEFAULT_TOOLS if allowed_tools is None else allowed_tools)
        for tool in tools:
            needs = permission_for(tool)
            if needs and not switches[needs.field]:
                raise PolicyError(f"tool {tool!r} needs {needs.flag} ({needs.parameter}); "
                                  "pass it, or leave the tool out of the allowed tools")
        for tool, spec in CATALOG.items():
            needs = PERMISSIONS.get(spec.capability)
            if needs and switches[needs.field] and tool not in tools:
                tools.append(tool)
        guarded = settings.approval_tools if approval_tools is None else list(approval_tools)
        unknown = sorted(set(guarded) - set(CATALOG))
        if unknown:
            raise ConfigurationError(f"FOREMAN_APPROVAL_TOOLS names unknown tool(s) {', '.join(unknown)}; "
                                     f"known tools: {', '.join(sorted(CATALOG))}")
        bases = (workspace_base(root),) if knowledge_bases is None else tuple(check_name(b) for b in knowledge_bases)
        return cls(workspace=root, allowed_tools=tuple(tools), allow_write=allow_write, allow_code=allow_code,
                   approval_tools=tuple(guarded), flow_tools=tuple(t for t in FLOW_TOOLS if t in tools),
                   knowledge_bases=tuple(dict.fromkeys(bases)), user=None if user is None else check_user(user))

    def permits(self, tool: str) -> bool:
        return tool in self.allowed_tools

    def why_not(self, tool: str) -> str:
        """Why a step may not be granted `tool`, and what the person would have to pass."""
        if tool not in CATALOG:
            return f"unknown tool {tool!r}; known tools: {', '.join(sorted(CATALOG))}"
        needs = permission_for(tool)
        if needs and not getattr(self, needs.field):
            return (f"tool {tool!r} needs {needs.flag} ({needs.parameter}), which this run was not started with")
        return f"tool {tool!r} is not allowed in this flow; allowed: {', '.join(sorted(self.allowed_tools))}"

    def require(self, tools: Iterable[str], where: str) -> None:
        """Raise `PolicyError` unless every tool in `tools` is allowed; `where` names who asked."""
        refused = [self.why_not(t) for t in dict.fromkeys(tools) if not self.permits(t)]
        if refused:
            raise PolicyError(f"{where}: " + "; ".join(refused))

    def narrow(self, tools: Iterable[str], where: str) -> RunPolicy:
        """This policy limited to `tools` (a workflow file's grants); asking for more is an error."""
        tools = _known(tools)
        self.require(tools, where)
        kept = tuple(t for t in self.allowed_tools if t in tools or t in self.flow_tools)
        return self.model_copy(update={"allowed_tools": kept})

    def step_tools(self, grants: Iterable[str]) -> set[str]:
        """Every tool a step with these grants can call: its grants plus the run's flow tools."""
        return set(grants) | set(self.flow_tools)

    def with_bases(self, names: Iterable[str]) -> RunPolicy:
        """This policy also reading the knowledge bases `names` (besides the workspace's own)."""
        added = tuple(check_name(n) for n in names)
        return self.model_copy(update={"knowledge_bases": tuple(dict.fromkeys((*self.knowledge_bases, *added)))})

    def in_workspace(self, workspace: Path | str) -> RunPolicy:
        """This policy over another folder (a workflow file's own `workspace:`), which must exist."""
        root = Path(workspace).expanduser().resolve()
        if not root.is_dir():
            raise ConfigurationError(f"workspace {str(root)!r} is not a folder; pass an existing folder")
        own, new = workspace_base(self.workspace), workspace_base(root)
        bases = tuple(new if b == own else b for b in self.knowledge_bases)  # the default follows the folder
        return self.model_copy(update={"workspace": root, "knowledge_bases": bases})


def tool_env(policy: RunPolicy, settings: Settings | None = None) -> ToolEnv:
    """The tools' environment for a run under `policy`: its workspace, and writing only if allowed."""
    env = ToolEnv.from_settings(settings, workspace=policy.workspace)
    workspace = env.workspace.model_copy(update={"allow_write": policy.allow_write})
    knowledge = KnowledgeScope(bases=policy.knowledge_bases, home=env.knowledge.home)
    memory = MemoryScope(user=policy.user, home=env.knowledge.home)
    return env.model_copy(update={"workspace": workspace, "knowledge": knowledge, "memory": memory})
