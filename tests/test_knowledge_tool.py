"""`search_knowledge` as a tool like any other: in scope only where granted, guarded by the run
policy's knowledge bases, every call and refusal audited."""

from __future__ import annotations

from pathlib import Path

import controlflow as cf
import pytest
from prefect import flow

from foreman.agents.models import use_model
from foreman.agents.registry import build_agent
from foreman.agents.scripted import ScriptedChatModel, Turn, call, succeed
from foreman.cf_adapter.taskrun import private_flow, run_task
from foreman.engine.policy import RunPolicy, tool_env
from foreman.errors import ToolRefused
from foreman.tools.audit import audit_log
from foreman.tools.catalog import build_tool, build_tools
from foreman.tools.knowledge.bases import workspace_base
from foreman.tools.knowledge.ingest import ingest

pytestmark = pytest.mark.usefixtures("prefect_server", "foreman_home")


def indexed_policy(workspace: Path, **kw) -> RunPolicy:
    ingest(workspace, roots=[workspace])
    return RunPolicy.build(workspace=workspace, **kw)


def run_one_task(policy: RunPolicy, task_tools: list[str], model: ScriptedChatModel) -> str:
    env = tool_env(policy)

    @flow(name="knowledge-scope")
    def go() -> str:
        agent = build_agent("file-searcher", env, model=model)  # agent-level tools: list_files only
        task = cf.Task("Find what the notes say about the Q3 report.", name="look", result_type=str,
                       agents=[agent], tools=build_tools(task_tools, env))
        return run_task(task, audit=env.audit, max_llm_calls=4, flow=private_flow(name="look"))

    with use_model(model):
        return go()


def last_run_records():
    run = audit_log().recent_runs(limit=1)[0]["run_id"]
    return audit_log().for_run(run)


def test_a_task_without_search_knowledge_cannot_call_it_and_the_refusal_is_audited(workspace: Path) -> None:
    model = ScriptedChatModel(replies=[call("search_knowledge", query="Q3 report recommendation"),
                                       succeed("could not search")])
    run_one_task(indexed_policy(workspace), ["read_file"], model)

    records = last_run_records()
    assert [(r.tool, r.outcome) for r in records] == [("search_knowledge", "refused")]
    assert "not in scope" in records[0].detail and "read_file" in records[0].detail
    assert any('no tool called "search_knowledge"' in str(m.content) for m in model.turns[1].messages)


def test_a_task_granted_search_knowledge_gets_passages_with_sources(workspace: Path) -> None:
    seen: list[Turn] = []

    def respond(turn: Turn):
        seen.append(turn)
        if len(seen) == 1:
            return call("search_knowledge", query="What does the Q3 report recommend?", k=3)
        return succeed("Move the log upload to 03:00 (report.txt:8).")

    model = ScriptedChatModel(responder=respond)
    answer = run_one_task(indexed_policy(workspace), ["search_knowledge"], model)

    assert "03:00" in answer
    records = last_run_records()
    assert [(r.tool, r.outcome) for r in records] == [("search_knowledge", "ok")]
    assert "report.txt:" in records[0].detail and "Recommendation: move the log upload" in records[0].detail
    assert records[0].task_name and "look" in records[0].task_name
    assert any("report.txt:" in str(m.content) for m in seen[1].messages)  # the passages reached the model


def test_only_the_bases_the_run_policy_names_may_be_searched(workspace: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "secret.md").write_text("# Other\n\nThe vault code is 4711.\n")
    other_base = ingest(other, roots=[other]).base
    policy = indexed_policy(workspace)
    assert policy.knowledge_bases == (workspace_base(workspace),)

    tool = build_tool("search_knowledge", tool_env(policy))
    assert tool.parameters["properties"]["knowledge_base"]["anyOf"][0]["enum"] == [workspace_base(workspace)]
    with pytest.raises(ToolRefused, match="not allowed in this run"):
        tool(query="vault code", knowledge_base=other_base)
    found = tool(query="vault code 4711", k=5)
    assert found and all(not hit["source"].startswith("secret.md") for hit in found)

    wider = RunPolicy.build(workspace=workspace, knowledge_bases=[workspace_base(workspace), other_base])
    hits = build_tool("search_knowledge", tool_env(wider))(query="vault code 4711", k=3)
    assert hits[0]["source"].startswith("secret.md:")

    none = RunPolicy.build(workspace=workspace, knowledge_bases=[])
    with pytest.raises(ToolRefused, match="may not search any knowledge base"):
        build_tool("search_knowledge", tool_env(none))(query="anything")
