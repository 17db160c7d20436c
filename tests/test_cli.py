"""The `foreman` command line: agents, tools, audit, model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from foreman.agents.models import use_model
from foreman.agents.scripted import ScriptedChatModel, call, succeed
from foreman.cli import app
from foreman.flows.file_search import file_search

runner = CliRunner()


def test_agents_lists_each_agent_with_its_tools() -> None:
    out = runner.invoke(app, ["agents"], terminal_width=200)
    assert out.exit_code == 0, out.output
    for name in ("generalist", "researcher", "coder", "writer"):
        assert name in out.output
    assert "run_python" in out.output


def test_tools_lists_guards_and_sandbox(foreman_home) -> None:
    out = runner.invoke(app, ["tools"], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "read_file" in out.output and "fetch_url" in out.output
    assert "code sandbox:" in out.output


def test_run_with_hosted_model_and_no_key_fails_naming_the_variable(
    foreman_home, monkeypatch: pytest.MonkeyPatch
) -> None:
    from foreman.settings import reset_settings

    monkeypatch.setenv("FOREMAN_MODEL", "anthropic/claude-3-5-haiku-latest")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    reset_settings()
    out = runner.invoke(app, ["run", "anything"], terminal_width=200)
    assert out.exit_code == 2  # setup error: nothing ran
    assert "ANTHROPIC_API_KEY" in out.output


def test_model_with_unknown_provider_says_which_are_supported(
    foreman_home, monkeypatch: pytest.MonkeyPatch
) -> None:
    from foreman.settings import reset_settings

    monkeypatch.setenv("FOREMAN_MODEL", "mistral/large")
    reset_settings()
    out = runner.invoke(app, ["run", "anything"], terminal_width=200)
    assert out.exit_code == 2
    assert "supported: local, openai" in out.output


@pytest.mark.usefixtures("prefect_server")
def test_audit_prints_every_call_and_refusal_of_a_run(foreman_home, workspace: Path) -> None:
    script = {
        "find": [call("read_file", path="todo.txt"), succeed(["todo.txt"])],
        "analysis": [call("read_file", path="../outside.txt"), succeed("done")],
    }
    model = ScriptedChatModel(
        responder=lambda turn: script["analysis" if "read_file" in turn.tool_names else "find"].pop(0)
    )
    with use_model(model):
        state = file_search(query="tasks", directory=str(workspace), return_state=True)
    run_id = str(state.state_details.flow_run_id)

    out = runner.invoke(app, ["audit", run_id[:8]], terminal_width=250)
    assert out.exit_code == 0, out.output
    assert out.output.count("refused") == 2  # out of scope, then out of the workspace

    as_json = runner.invoke(app, ["audit", run_id, "--json"])
    records = [json.loads(line) for line in as_json.output.splitlines()]
    assert [r["outcome"] for r in records] == ["refused", "refused"]
    assert "not in scope" in records[0]["detail"]
    assert "workspace" in records[1]["detail"]
    assert {r["run_id"] for r in records} == {run_id}

    listing = runner.invoke(app, ["audit"], terminal_width=250)
    assert run_id in listing.output


def test_audit_of_unknown_run_says_how_to_find_runs(foreman_home) -> None:
    out = runner.invoke(app, ["audit", "no-such-run"])
    assert out.exit_code == 1
    assert "foreman audit" in out.output


@pytest.mark.usefixtures("prefect_server")
def test_search_prints_findings_model_and_where_to_look(foreman_home, workspace: Path) -> None:
    script = {
        "find": [succeed(["report.txt"])],
        "analysis": [succeed("Backups failed twice in Q3.")],
    }
    model = ScriptedChatModel(
        responder=lambda turn: script["analysis" if "read_file" in turn.tool_names else "find"].pop(0)
    )
    with use_model(model):
        out = runner.invoke(app, ["search", "backup", "--directory", str(workspace)], terminal_width=250)
    assert out.exit_code == 0, out.output
    assert "model: embedded llama.cpp" in out.output  # every run says which model and how to switch
    assert "FOREMAN_MODEL=openai/" in out.output
    assert "files: report.txt" in out.output
    assert "Backups failed twice" in out.output
    assert "foreman audit " in out.output


def _planning_model() -> ScriptedChatModel:
    from foreman.agents.scripted import succeed_model

    def respond(turn):
        text = "\n".join(str(m.content) for m in turn.messages)
        if "a plan for this objective" in text:
            return succeed_model(rationale="look, then tell", tasks=[
                {"id": "look", "title": "Look", "instructions": "List files.", "agent": "researcher", "tools": ["list_files"]},
                {"id": "tell", "title": "Tell", "instructions": "Say it.", "agent": "writer", "depends_on": ["look"]},
            ])
        if "Answer the objective" in text:
            return succeed("Five files.")
        return succeed("done")

    return ScriptedChatModel(responder=respond)


@pytest.mark.usefixtures("prefect_server")
def test_plan_json_prints_only_the_plan_on_stdout(foreman_home) -> None:
    with use_model(_planning_model()):
        out = runner.invoke(app, ["plan", "count the files", "--json"])
    assert out.exit_code == 0, out.output
    plan = json.loads(out.stdout)
    assert [t["id"] for t in plan["tasks"]] == ["look", "tell"]
    assert plan["rationale"] == "look, then tell"


@pytest.mark.usefixtures("prefect_server")
def test_plan_shows_table_and_graph(foreman_home) -> None:
    with use_model(_planning_model()):
        out = runner.invoke(app, ["plan", "count the files"], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "look -> tell" in out.output and "graph TD" in out.output and "researcher" in out.output


@pytest.mark.usefixtures("prefect_server")
def test_run_plans_runs_and_prints_the_answer(foreman_home, workspace: Path) -> None:
    with use_model(_planning_model()):
        out = runner.invoke(app, ["run", "count the files", "--workspace", str(workspace)], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "COMPLETED" in out.output and "answer: Five files." in out.output
    assert "foreman audit" in out.output and "--resume" in out.output


def test_approvals_without_a_server_say_which_setting_points_at_it() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        for args in (["approvals"], ["approve", "0b6a3c1e-0000-4000-8000-000000000000"]):
            out = runner.invoke(app, args, terminal_width=200)
            assert out.exit_code == 2 and "PREFECT_API_URL" in out.output, out.output
