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
        out = runner.invoke(app, ["plan", "count the files", "--json", "--no-ground"])
    assert out.exit_code == 0, out.output
    plan = json.loads(out.stdout)
    assert [t["id"] for t in plan["tasks"]] == ["look", "tell"]
    assert plan["rationale"] == "look, then tell"


@pytest.mark.usefixtures("prefect_server")
def test_plan_draws_the_graph_on_the_terminal_and_mermaid_on_request(foreman_home) -> None:
    with use_model(_planning_model()):
        out = runner.invoke(app, ["plan", "count the files", "--no-ground"], terminal_width=200)
        mermaid = runner.invoke(app, ["plan", "count the files", "--mermaid", "--no-ground"], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "look -> tell" in out.output and "researcher" in out.output
    assert "graph TD" not in out.output  # a tree a person reads, not Mermaid source
    tree = [line for line in out.output.splitlines() if "look: Look" in line or "tell: Tell" in line]
    assert tree[-2].startswith("└── look: Look") and tree[-1].strip().startswith("└── tell: Tell")
    assert mermaid.exit_code == 0, mermaid.output
    assert mermaid.stdout.startswith("graph TD") and "look --> tell" in mermaid.stdout


@pytest.mark.usefixtures("prefect_server")
def test_run_plans_runs_and_prints_the_answer(foreman_home, workspace: Path) -> None:
    with use_model(_planning_model()):
        out = runner.invoke(app, ["run", "count the files", "--workspace", str(workspace), "--no-ground"],
                            terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "COMPLETED" in out.output and "answer: Five files." in out.output
    assert "foreman audit" in out.output and "--resume" in out.output
    assert "Traceback" not in out.output


def test_approvals_without_a_server_say_which_setting_points_at_it() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        for args in (["approvals"], ["approve", "0b6a3c1e-0000-4000-8000-000000000000"]):
            out = runner.invoke(app, args, terminal_width=200)
            assert out.exit_code == 2 and "PREFECT_API_URL" in out.output, out.output


# --- refused before anything runs: one line, exit code 2, no flow run, nobody notified -----------------


def flow_run_ids() -> set[str]:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return {str(r.id) for r in client.read_flow_runs(limit=200)}


@pytest.fixture()
def refused(monkeypatch: pytest.MonkeyPatch):
    """Call with CLI args: asserts exit code 2, one error line, no new flow run and no notification."""
    from foreman import notifications

    told: list = []
    monkeypatch.setattr(notifications, "notify", lambda event: told.append(event) or [])

    def check(*args: str) -> str:
        before = flow_run_ids()
        out = runner.invoke(app, list(args), terminal_width=200)
        assert out.exit_code == 2, out.output
        assert "Traceback" not in out.output and out.output.count("error:") == 1, out.output
        assert flow_run_ids() == before, "a refused run must not create a flow run"
        assert told == []
        return " ".join(out.output.split())

    return check


BAD_NAME = "name: Bad_Name\nsteps:\n  - {id: a, script: a.py}\n"


@pytest.mark.usefixtures("prefect_server", "foreman_home")
def test_an_invalid_workflow_file_is_refused_with_every_character_of_its_error(tmp_path: Path, refused) -> None:
    (tmp_path / "a.py").write_text("print(1)\n")
    path = tmp_path / "workflow.yaml"
    path.write_text(BAD_NAME)
    said = refused("workflow", "run", str(path))
    assert "name: String should match pattern '^[a-z0-9][a-z0-9-]*$'" in said  # Rich markup ate [a-z0-9] before
    assert refused("workflow", "run", str(tmp_path / "missing.yaml")).count("no such file") == 1


@pytest.mark.usefixtures("prefect_server", "foreman_home")
def test_a_missing_workspace_is_refused_before_a_run(tmp_path: Path, refused) -> None:
    assert "is not a folder" in refused("run", "anything", "--workspace", str(tmp_path / "nope"))
    (tmp_path / "a.py").write_text("print(1)\n")
    path = tmp_path / "workflow.yaml"
    path.write_text("name: w\nworkspace: gone\nsteps:\n  - {id: a, script: a.py}\n")
    assert "workspace: 'gone' is not a folder" in refused("workflow", "run", str(path))
    assert "does not exist" in refused("search", "x", "--directory", str(tmp_path / "nope"))


@pytest.mark.usefixtures("prefect_server", "foreman_home")
def test_bad_params_and_budgets_are_refused_before_a_run(tmp_path: Path, refused) -> None:
    (tmp_path / "a.py").write_text("print(1)\n")
    path = tmp_path / "workflow.yaml"
    path.write_text("name: w\nparams: {limit: 3}\nsteps:\n  - {id: a, script: a.py}\n")
    assert "params.limit: 'many' is not a valid int" in refused("workflow", "run", str(path), "-p", "limit=many")
    assert "no parameter 'limt'" in refused("workflow", "run", str(path), "-p", "limt=4")
    assert "max_concurrency" in refused("run", "anything", "--max-concurrency", "1000")
    assert "--resume 'no-such-key'" in refused("run", "anything", "--resume", "no-such-key")


@pytest.mark.usefixtures("prefect_server")
def test_a_model_configuration_that_cannot_work_is_refused_before_a_run(
    foreman_home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused
) -> None:
    from foreman.settings import reset_settings

    monkeypatch.setenv("FOREMAN_MODEL", "anthropic/claude-3-5-haiku-latest")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    reset_settings()
    assert "ANTHROPIC_API_KEY" in refused("run", "anything")
    (tmp_path / "w.yaml").write_text("name: w\nsteps:\n  - {id: a, agent: generalist, instructions: say hi}\n")
    assert "ANTHROPIC_API_KEY" in refused("workflow", "run", str(tmp_path / "w.yaml"))


@pytest.mark.usefixtures("prefect_server", "foreman_home")
def test_an_unreachable_server_is_one_line_naming_the_url(tmp_path: Path, refused) -> None:
    import socket

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    (tmp_path / "a.py").write_text("print(1)\n")
    (tmp_path / "w.yaml").write_text("name: w\nsteps:\n  - {id: a, script: a.py}\n")
    dead = f"http://127.0.0.1:{port}/api"
    with temporary_settings(updates={PREFECT_API_URL: dead}):
        for args in (["run", "anything"], ["workflow", "run", str(tmp_path / "w.yaml")],
                     ["workflow", "deploy", str(tmp_path / "w.yaml")], ["approvals"]):
            out = runner.invoke(app, args, terminal_width=200)
            assert out.exit_code == 2 and f"PREFECT_API_URL={dead}" in out.output, out.output
            assert "Traceback" not in out.output and len(out.output.strip().splitlines()) <= 2, out.output
    assert refused  # the server the tests use saw no run either (checked by the fixture's next use)


def test_debug_shows_the_traceback_and_plain_errors_stay_one_line(tmp_path: Path) -> None:
    path = tmp_path / "workflow.yaml"
    path.write_text(BAD_NAME)
    plain = runner.invoke(app, ["workflow", "check", str(path)], terminal_width=200)
    assert plain.exit_code == 2 and plain.exception is None or isinstance(plain.exception, SystemExit)
    debug = runner.invoke(app, ["--debug", "workflow", "check", str(path)], terminal_width=200)
    from foreman.errors import WorkflowError

    assert isinstance(debug.exception, WorkflowError)  # raised, so the traceback is printed


@pytest.mark.usefixtures("prefect_server")
def test_a_planner_run_tells_its_progress_and_keeps_its_answer(foreman_home, workspace: Path) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from foreman.engine.progress import listening
    from foreman.flows.planner import plan_and_run

    told: list = []
    with use_model(_planning_model()), listening(told.append):
        state = plan_and_run("count the files", workspace=str(workspace), ground=False, return_state=True)
    texts = [p.text for p in told]
    assert texts[0] == "planning" and "planning: model call 1 of at most" in texts[1]
    assert any(t.startswith("running: 1 of 2 steps done") for t in texts) and "writing the answer" in texts
    run_id = str(state.state_details.flow_run_id)
    assert {p.run_id for p in told} == {run_id}

    with get_client(sync_client=True) as client:
        stored = client.read_flow_run(run_id).state
        found = {a.key: a for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))}
    assert stored.result().answer == "Five files."  # the persisted result, read back through the API
    assert "Five files." in found["answer"].data and found["answer"].description == "Five files."
    assert found["progress"].data == 100.0


def test_prefects_console_log_keeps_a_failed_runs_error_to_one_line() -> None:
    import logging

    from foreman.cli._output import _NoTraceback

    try:
        raise ValueError("no valid plan after 3 attempts")
    except ValueError:
        import sys

        record = logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "Encountered exception during "
                                   "execution", None, sys.exc_info())
    short = _NoTraceback(logging.Formatter("%(message)s")).format(record)
    assert "Traceback" not in short and "ValueError: no valid plan after 3 attempts" in short and "--debug" in short
    assert "Traceback" in logging.Formatter("%(message)s").format(record)  # other handlers keep the stack
