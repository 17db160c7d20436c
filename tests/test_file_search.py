"""The file-search flow: tools scoped at flow, agent and task level, every call audited.

A scripted model drives the real ControlFlow + Prefect path; it records the tools
bound in each turn, which is the effective tool set the agent had.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from foreman.agents.models import use_model
from foreman.agents.scripted import ScriptedChatModel, ScriptedReply, Turn, call, succeed
from foreman.flows.file_search import file_search
from foreman.tools.audit import audit_log

pytestmark = pytest.mark.usefixtures("prefect_server", "foreman_home")

COMPLETION = ("mark_task_",)


def user_tools(turn: Turn) -> set[str]:
    return {n for n in turn.tool_names if not n.startswith(COMPLETION)}


def in_analysis(turn: Turn) -> bool:
    return "read_file" in turn.tool_names


def scripted(find_steps: list[ScriptedReply], analysis_steps: list[ScriptedReply]) -> ScriptedChatModel:
    """Replies for each task, in order, chosen by which task's tools are bound."""
    queues = {"find": list(find_steps), "analysis": list(analysis_steps)}

    def respond(turn: Turn) -> ScriptedReply:
        queue = queues["analysis" if in_analysis(turn) else "find"]
        assert queue, f"unexpected extra turn with tools {turn.tool_names}"
        return queue.pop(0)

    return ScriptedChatModel(responder=respond)


def test_each_task_sees_exactly_its_scoped_tools_and_the_flow_reports_findings(workspace: Path) -> None:
    model = scripted(
        find_steps=[call("list_files"), succeed(["meeting_notes.txt", "notes/wifi.md"])],
        analysis_steps=[
            call("read_file", path="meeting_notes.txt"),
            call("update_user", message="The launch meeting is on 2026-11-18 at 19:30."),
            succeed("Launch meeting: 2026-11-18 19:30 (meeting_notes.txt)."),
        ],
    )
    with use_model(model):
        result = file_search(query="launch meeting", directory=str(workspace))

    assert result.files == ["meeting_notes.txt", "notes/wifi.md"]
    assert "2026-11-18" in result.findings

    find_turns = [t for t in model.turns if not in_analysis(t)]
    analysis_turns = [t for t in model.turns if in_analysis(t)]
    # flow tool (update_user) + agent tool (list_files) everywhere; read_file only in analysis
    assert {user_tools(t) == {"update_user", "list_files"} for t in find_turns} == {True}
    assert {user_tools(t) == {"update_user", "list_files", "read_file"} for t in analysis_turns} == {True}

    records = audit_log().for_run(records_run_id(model))
    calls = [(r.tool, r.outcome, r.agent) for r in records]
    assert calls == [
        ("list_files", "ok", "file-searcher"),
        ("read_file", "ok", "file-searcher"),
        ("update_user", "ok", "file-searcher"),
    ]
    read = records[1]
    assert read.arguments == {"path": "meeting_notes.txt"}
    assert read.task_name and "analyze-files" in read.task_name
    assert "launch" in read.detail.lower()


def records_run_id(model: ScriptedChatModel) -> str:
    runs = audit_log().recent_runs(limit=1)
    assert runs, "no audit records at all"
    return runs[0]["run_id"]


@pytest.mark.parametrize(
    ("tool", "args", "why"),
    [
        ("read_file", {"path": "todo.txt"}, "task-level tool called outside its task"),
        ("run_python", {"source": "print(1)"}, "another agent's tool"),
    ],
)
def test_out_of_scope_call_is_refused_without_running_and_audited(
    workspace: Path, tool: str, args: dict, why: str
) -> None:
    model = scripted(
        find_steps=[call(tool, **args), succeed(["todo.txt"])],
        analysis_steps=[succeed("nothing to report")],
    )
    with use_model(model):
        result = file_search(query="tasks", directory=str(workspace))
    assert result.files == ["todo.txt"], why

    records = audit_log().for_run(records_run_id(model))
    assert [(r.tool, r.outcome) for r in records] == [(tool, "refused")], why
    assert "not in scope" in records[0].detail
    assert "list_files" in records[0].detail  # says what was available
    # the refusal reached the model, so it could change course
    refusal_turn = model.turns[1]
    assert any(f'no tool called "{tool}"' in str(m.content) for m in refusal_turn.messages)


def test_path_escaping_the_workspace_is_refused_and_audited(workspace: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    (workspace / "link.txt").symlink_to(secret)
    model = scripted(
        find_steps=[succeed(["todo.txt"])],
        analysis_steps=[
            call("read_file", path="../secret.txt"),
            call("read_file", path=str(secret)),
            call("read_file", path="link.txt"),
            succeed("could not read"),
        ],
    )
    with use_model(model):
        file_search(query="secret", directory=str(workspace))

    records = audit_log().for_run(records_run_id(model))
    assert [(r.tool, r.outcome) for r in records] == [("read_file", "refused")] * 3
    for turn in model.turns:
        assert not any("top secret" in str(m.content) for m in turn.messages)


def test_agent_that_never_completes_fails_the_flow_with_the_budget_named(workspace: Path) -> None:
    model = ScriptedChatModel(responder=lambda turn: call("list_files"))
    with use_model(model), pytest.raises(Exception, match="model-call budget of 3"):
        file_search(query="anything", directory=str(workspace), max_llm_calls=3)
    assert len(model.turns) == 3


def test_missing_directory_is_refused_before_any_model_call(tmp_path: Path) -> None:
    model = ScriptedChatModel()
    from foreman.errors import ConfigurationError

    with use_model(model), pytest.raises(ConfigurationError, match="does not exist"):
        file_search(query="x", directory=str(tmp_path / "nope"))
    assert model.turns == []
