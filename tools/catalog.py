"""The tool catalogue: every tool an agent may be given, by name, built behind its guard.

A tool is built for one run from a `ToolEnv` (the workspace it may touch, whether it
may write, which hosts it may reach, its code limits), wrapped so that every call and
every refusal lands in the audit log. Where the valid argument values are known (the
workspace's real paths), the schema lists them as an enum, so a small model that
decodes under the schema cannot invent a path.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from controlflow.tools.tools import Tool
from pydantic import BaseModel, ConfigDict, Field

from foreman.errors import ToolRefused, UnknownToolError
from foreman.settings import Settings, get_settings
from foreman.tools import code, files, http, notify
from foreman.tools.audit import AuditLog, AuditRecord, Stopwatch, audit_log, current_context
from foreman.tools.knowledge import tool as knowledge_tool
from foreman.tools.knowledge.bases import workspace_base
from foreman.tools.media import tools as media_tools
from foreman.tools.memory import tools as memory_tools
from foreman.tools.memory.scope import MemoryScope

Capability = Literal["read_files", "write_files", "network", "run_code", "notify", "read_knowledge", "memory"]
ENUM_LIMIT = 200


class ToolEnv(BaseModel):
    """What the tools of one run may touch. Flows build it from the run's policy
    (`foreman.engine.policy.tool_env`), which alone decides whether writing is allowed."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    workspace: files.Workspace
    http: http.HttpPolicy
    code: code.CodeLimits
    audit: AuditLog
    knowledge: knowledge_tool.KnowledgeScope = Field(default_factory=knowledge_tool.KnowledgeScope)
    memory: MemoryScope = Field(default_factory=MemoryScope)  # whose memory: set from RunPolicy.user only

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        workspace: Path | str | None = None,
    ) -> ToolEnv:
        """Read-only tools over `workspace` (default FOREMAN_WORKSPACE); knowledge search over
        that workspace's own index."""
        settings = settings or get_settings()
        if workspace is not None:
            settings = settings.model_copy(update={"workspace": Path(workspace)})
        return cls(
            workspace=files.Workspace.from_settings(settings),
            http=http.HttpPolicy.from_settings(settings),
            code=code.CodeLimits.from_settings(settings),
            audit=audit_log(settings.audit_db),
            knowledge=knowledge_tool.KnowledgeScope(bases=(workspace_base(settings.workspace),), home=settings.home),
        )


class GuardedTool(Tool):
    """A ControlFlow tool built by Foreman: guarded, audited, callable like the function it wraps.

    Callable so that it may also be given where ControlFlow expects a function
    (a flow's `tools`), without losing its constrained schema.
    """

    def __call__(self, **kwargs: Any) -> Any:
        return self.fn(**kwargs)


class ToolSpec(BaseModel):
    """A catalogue entry: what the tool does and what it touches."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    summary: str
    capability: Capability
    make: Callable[[ToolEnv], Callable[..., Any]]




# --- the tools, bound to a run's env -------------------------------------------------


def _list_files(env: ToolEnv) -> Callable[..., Any]:
    def list_files(directory: str = ".") -> list[str]:
        """List the files under a folder of the workspace. Paths are relative to the workspace root."""
        return files.list_files(env.workspace, directory)

    return list_files


def _read_file(env: ToolEnv) -> Callable[..., Any]:
    def read_file(path: str) -> str:
        """Read a text file of the workspace. The path is relative to the workspace root."""
        return files.read_file(env.workspace, path)

    return read_file


def _search_files(env: ToolEnv) -> Callable[..., Any]:
    def search_files(query: str, directory: str = ".") -> list[dict]:
        """Find lines containing `query` (case-insensitive) in the workspace's text files."""
        return files.search_files(env.workspace, query, directory)

    return search_files


def _write_file(env: ToolEnv) -> Callable[..., Any]:
    def write_file(path: str, content: str) -> str:
        """Write a text file in the workspace (only when this run was granted write access)."""
        return files.write_file(env.workspace, path, content)

    return write_file


def _fetch_url(env: ToolEnv) -> Callable[..., Any]:
    def fetch_url(url: str) -> str:
        """Fetch a web page or API response as text (only from the allowed hosts)."""
        return http.fetch_url(url, env.http)

    return fetch_url


def _run_python(env: ToolEnv) -> Callable[..., Any]:
    def run_python(source: str) -> dict:
        """Run a Python program in a sandbox (standard library only, no network, time and memory limits;
        use sys.exit, not exit); the workspace is readable (not writable) at /workspace and its tables
        are CSV files in /tables; returns its output."""
        return code.run_python(source, env.code, ro_binds=code.data_binds(env.workspace.root)).model_dump()

    return run_python


def _search_knowledge(env: ToolEnv) -> Callable[..., Any]:
    def search_knowledge(query: str, k: int = 5, knowledge_base: str | None = None) -> list[dict]:
        """Find the passages of the knowledge base(s) most relevant to `query`; each comes with its
        source as path:line. Leave knowledge_base unset to search every base this run may read."""
        return knowledge_tool.search_knowledge(env.knowledge, query, k, knowledge_base)

    return search_knowledge


def _make_chart(env: ToolEnv) -> Callable[..., Any]:
    def make_chart(source: str, name: str) -> dict:
        """Draw a chart: matplotlib code (plt is imported; no savefig needed) run in the sandbox.
        Each open figure is saved as charts/<name>.png and shown on the run."""
        return media_tools.make_chart(env.workspace, env.code, source, name).model_dump()

    return make_chart


def _speak_text(env: ToolEnv) -> Callable[..., Any]:
    def speak_text(text: str, path: str) -> dict:
        """Speak a text aloud into a .wav file in the workspace (only when the run may write)."""
        return media_tools.speak_text(env.workspace, text, path)

    return speak_text


def _notify_user(env: ToolEnv) -> Callable[..., Any]:
    def notify_user(message: str) -> str:
        """Send the user a message: it appears in the run's logs and as an artifact in the UI."""
        return notify.notify_user(message)

    return notify_user


def _update_user(env: ToolEnv) -> Callable[..., Any]:
    def update_user(message: str) -> str:
        """Post a status update for the user to read (run logs and the Prefect UI)."""
        return notify.notify_user(message)

    return update_user


CATALOG: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in [
        ToolSpec(name="list_files", summary="list workspace files", capability="read_files", make=_list_files),
        ToolSpec(name="read_file", summary="read a workspace file", capability="read_files", make=_read_file),
        ToolSpec(name="search_files", summary="grep the workspace", capability="read_files", make=_search_files),
        ToolSpec(name="write_file", summary="write a workspace file", capability="write_files", make=_write_file),
        ToolSpec(name="fetch_url", summary="HTTP GET from allowed hosts", capability="network", make=_fetch_url),
        ToolSpec(name="run_python", summary="run Python in a sandbox", capability="run_code", make=_run_python),
        ToolSpec(name="make_chart", summary="draw a matplotlib chart in the sandbox (PNG + run artifact)",
                 capability="run_code", make=_make_chart),
        ToolSpec(name="speak_text", summary="speak text to a .wav file in the workspace", capability="write_files",
                 make=_speak_text),
        ToolSpec(name="search_knowledge", summary="search the knowledge bases (passages with path:line)",
                 capability="read_knowledge", make=_search_knowledge),
        ToolSpec(name="notify_user", summary="message the user", capability="notify", make=_notify_user),
        ToolSpec(name="update_user", summary="status update to the user", capability="notify", make=_update_user),
        ToolSpec(name="remember", summary="keep a fact about the run's user", capability="memory",
                 make=memory_tools.make_remember),
        ToolSpec(name="recall", summary="search the run's user's memories", capability="memory",
                 make=memory_tools.make_recall),
        ToolSpec(name="forget", summary="delete one of the run's user's memories", capability="memory",
                 make=memory_tools.make_forget),
    ]
}


def get_spec(name: str) -> ToolSpec:
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownToolError(name, CATALOG) from None


def _constrain(name: str, parameters: dict, env: ToolEnv) -> dict:
    """Put the workspace's real paths into the schema as enums, when there are few enough."""
    props = parameters.get("properties", {})
    if name in ("list_files", "search_files") and "directory" in props:
        dirs = files.workspace_dirs(env.workspace, limit=ENUM_LIMIT + 1)
        if 0 < len(dirs) <= ENUM_LIMIT:
            props["directory"]["enum"] = dirs
    if name == "search_knowledge" and "knowledge_base" in props and env.knowledge.bases:
        props["knowledge_base"] = {"anyOf": [{"type": "string", "enum": list(env.knowledge.bases)}, {"type": "null"}],
                                   "default": None, "title": props["knowledge_base"].get("title", "Knowledge Base")}
    if name == "search_knowledge" and "k" in props:
        props["k"].update({"minimum": 1, "maximum": knowledge_tool.MAX_K})
    if name == "read_file" and "path" in props:
        paths = files.workspace_paths(env.workspace, limit=ENUM_LIMIT + 1)
        if 0 < len(paths) <= ENUM_LIMIT:
            props["path"]["enum"] = paths
    return parameters


def _summarize(result: Any) -> str:
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, default=str)
    except (TypeError, ValueError):
        return repr(result)


def audited(name: str, fn: Callable[..., Any], log: AuditLog) -> Callable[..., Any]:
    """Wrap `fn` so each call, error and refusal is recorded with its run, agent and task."""

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> Any:
        context = current_context()
        watch = Stopwatch()

        def record(outcome: str, detail: str) -> None:
            log.record(
                AuditRecord(
                    **context.model_dump(),
                    tool=name,
                    arguments=kwargs,
                    outcome=outcome,
                    detail=detail,
                    duration_ms=watch.ms,
                )
            )

        try:
            result = fn(**kwargs)
        except ToolRefused as exc:
            record("refused", str(exc))
            raise
        except Exception as exc:  # any failure is audited, then re-raised unchanged
            record("error", f"{type(exc).__name__}: {exc}")
            raise
        record("ok", _summarize(result))
        return result

    return wrapper


def build_tool(name: str, env: ToolEnv) -> GuardedTool:
    """One ControlFlow tool, guarded and audited, for the run that owns `env`."""
    spec = get_spec(name)
    fn = spec.make(env)
    tool = GuardedTool.from_function(audited(name, fn, env.audit), name=name)
    tool.parameters = _constrain(name, tool.parameters, env)
    tool.metadata = {"capability": spec.capability, "foreman": True}
    return tool


def build_tools(names: list[str], env: ToolEnv) -> list[GuardedTool]:
    """Several tools; an unknown name fails before anything runs."""
    for name in names:
        get_spec(name)
    return [build_tool(name, env) for name in names]
