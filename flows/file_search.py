"""File search: ControlFlow's tool-scoping example as a Prefect flow.

Tools are granted at three levels, exactly as in ControlFlow's custom-tools example:
- the flow gets `update_user`: every agent in it may message the user;
- the `file-searcher` agent gets `list_files`: it may list files in any task;
- the analysis task gets `read_file`: file contents are readable only while it runs.
The folder searched is the workspace for this run; no tool can leave it. The findings are
the run's "answer" artifact and its persisted result.
"""

from __future__ import annotations

import foreman  # noqa: F401  (offline env first: Prefect may load this file by path)

# isort: split

from pathlib import Path

import controlflow as cf
from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from foreman.agents.models import describe_model
from foreman.agents.registry import build_agent
from foreman.cf_adapter.taskrun import private_flow, run_step
from foreman.engine.explain import write_answer
from foreman.errors import ConfigurationError
from foreman.flows.forms import offer_form
from foreman.notifications import FAILURE_HOOKS
from foreman.settings import get_settings
from foreman.tools.catalog import ToolEnv, build_tools
from foreman.tools.files import workspace_paths

FLOW_TOOLS = ["update_user"]
AGENT = "file-searcher"
ANALYSIS_TOOLS = ["read_file"]


class FileSearchResult(BaseModel):
    query: str
    directory: str
    files: list[str] = Field(description="Workspace-relative paths judged relevant to the query.")
    findings: str = Field(description="What the files say about the query.")


class FileSearchForm(BaseModel):
    """The file-search deployment's form."""

    query: str = Field(title="What to look for", description="A topic or question, e.g. 'launch meeting'.")
    directory: str | None = Field(default=None, title="Folder",
                                  description="The folder to search (default: FOREMAN_WORKSPACE on the worker).")
    max_llm_calls: int = Field(default=8, title="Model-call budget", description="Per step.")


def search_root(directory: str | None) -> Path:
    """The folder a search reads, or a ConfigurationError naming it (checked before a run starts, too)."""
    root = Path(directory or get_settings().workspace).expanduser().resolve()
    if not root.is_dir():
        raise ConfigurationError(f"directory {str(root)!r} does not exist or is not a folder; pass an existing folder")
    return root


@flow(name="file-search", log_prints=True, persist_result=True, **FAILURE_HOOKS)
def file_search(query: str, directory: str | None = None, max_llm_calls: int = 8) -> FileSearchResult:
    """Find the files in `directory` that relate to `query`, read them, and report the findings.

    `directory` defaults to the configured workspace (FOREMAN_WORKSPACE, the demo folder).
    """
    settings = get_settings()
    root = search_root(directory)
    log = get_run_logger()
    log.info(describe_model(settings))

    env = ToolEnv.from_settings(settings, workspace=root)
    agent = build_agent(AGENT, env, settings=settings)
    known = workspace_paths(env.workspace)

    with private_flow(name="file-search", tools=build_tools(FLOW_TOOLS, env), default_agent=agent):
        found = cf.Task(
            f"Identify the files in the workspace that might relate to '{query}'. "
            "Return their paths exactly as list_files prints them.",
            name="find-files",
            result_type=list[str],
            agents=[agent],
        )
        files = run_step(found, audit=env.audit, max_llm_calls=max_llm_calls)
        unknown = [f for f in files if f not in known]
        if unknown:
            log.warning("ignoring paths that are not workspace files: %s", unknown)
        files = [f for f in files if f in known]

        analysis = cf.Task(
            f"Read the files and report what they say about '{query}'. "
            "Update the user on your findings, then give them as the result.",
            name="analyze-files",
            instructions="You must update the user on your findings to complete the task.",
            tools=build_tools(ANALYSIS_TOOLS, env),
            context={"files": files, "query": query},
            depends_on=[found],
            result_type=str,
            agents=[agent],
        )
        findings = run_step(analysis, audit=env.audit, max_llm_calls=max_llm_calls)

    result = FileSearchResult(query=query, directory=str(root), files=files, findings=findings)
    log.info("found %d file(s): %s", len(files), ", ".join(files) or "none")
    write_answer(query, findings, sources=files)
    return result


offer_form(file_search, FileSearchForm)
