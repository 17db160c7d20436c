"""One decision each: who may run a step, which tools a run may use, what an error means.

Each test here failed on the code before the run policy and the eligibility function
existed (validation, approval rule and runner each decided on their own).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner
from typer.testing import CliRunner

from foreman import errors
from foreman.agents.models import use_model
from foreman.agents.registry import AgentRegistry, AgentSpec, registry
from foreman.agents.scripted import ScriptedChatModel, succeed, succeed_model
from foreman.cli import app
from foreman.engine.cf_runner import ControlFlowRunner, build_scope
from foreman.engine.eligibility import AgentInfo, eligible_agents
from foreman.engine.executor import Engine
from foreman.engine.plan import Plan, SubTask
from foreman.engine.policy import RunPolicy, tool_env
from foreman.engine.records import NodeStatus, Usage
from foreman.engine.store import run_store
from foreman.engine.validate import PlanScope, validate_plan
from foreman.engine.workflow import load_workflow
from foreman.errors import PlanInvalid, PolicyError, WorkflowError
from foreman.settings import get_settings

cli = CliRunner()


def split_registry() -> AgentRegistry:
    """Two agents share a capability; neither may use both tools."""
    return AgentRegistry([
        AgentSpec(name="reader", description="r", instructions="r", capabilities=["research"], tools=["read_file"]),
        AgentSpec(name="fetcher", description="f", instructions="f", capabilities=["research"], tools=["fetch_url"]),
    ])


def test_a_step_no_single_agent_may_run_is_refused_at_validation_not_mid_run() -> None:
    agents = split_registry()
    scope = build_scope(agents, RunPolicy.build(check_workspace=False))
    both = SubTask(id="look", title="look", instructions="i", capability="research", tools=["read_file", "fetch_url"])
    with pytest.raises(PlanInvalid) as info:
        validate_plan(Plan(tasks=[both]), scope)
    message = str(info.value)
    assert "look.tools: no single agent with capability 'research' may use all of read_file, fetch_url" in message
    assert "reader may use read_file" in message and "fetcher may use fetch_url" in message
    one = both.model_copy(update={"tools": ["fetch_url"]})
    assert eligible_agents(one, scope.agents) == ["fetcher"]  # the runner picks from exactly this list


def test_the_runner_chooses_among_exactly_the_eligible_agents(tmp_path: Path) -> None:
    agents = split_registry()
    policy = RunPolicy.build(workspace=tmp_path)
    runner = ControlFlowRunner(tool_env(policy), agents, get_settings(), policy=policy)
    sub = SubTask(id="s", title="s", instructions="i", capability="research", tools=["fetch_url"])
    assert runner.candidates(sub) == ["fetcher"]
    both = sub.model_copy(update={"tools": ["read_file", "fetch_url"]})
    with pytest.raises(PolicyError, match="no single agent"):
        runner.choose_agent(both, tried=[])


def test_approval_points_follow_the_tools_a_step_can_really_call() -> None:
    policy = RunPolicy.build(allow_write=True, approval_tools=["write_file"], check_workspace=False)
    scope = build_scope(registry, policy)
    plain = SubTask(id="draft", title="draft", instructions="i", agent="writer")  # granted nothing
    saving = SubTask(id="save", title="save", instructions="i", agent="writer", tools=["write_file"])
    valid = validate_plan(Plan(tasks=[plain, saving]), scope)
    assert valid.approvals_added == ["save"]
    assert not valid.plan.task("draft").approval  # the runner gives the writer no tools here


def test_flow_tools_count_for_approvals_because_every_step_gets_them() -> None:
    policy = RunPolicy.build(approval_tools=["notify_user"], check_workspace=False)
    valid = validate_plan(Plan(tasks=[SubTask(id="a", title="a", instructions="i", agent="generalist")]),
                          build_scope(registry, policy))
    assert valid.approvals_added == ["a"]


CODE_WORKFLOW = "name: calc\nsteps:\n  - {id: add, agent: coder, instructions: Add 2 and 2., tools: [run_python]}\n"


def test_a_workflow_cannot_grant_code_the_person_running_it_did_not_allow(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(CODE_WORKFLOW)
    with pytest.raises(WorkflowError, match=r"add.tools: tool 'run_python' needs --allow-code"):
        load_workflow(path, build_scope(registry, RunPolicy.build(check_workspace=False)))
    allowed = RunPolicy.build(allow_code=True, check_workspace=False)
    workflow = load_workflow(path, build_scope(registry, allowed))
    narrowed = allowed.narrow(workflow.tools, "workflow calc")
    assert set(narrowed.allowed_tools) == {"run_python", "notify_user"}
    assert not narrowed.permits("read_file")  # narrowed to what the file names (plus flow tools)


@pytest.mark.usefixtures("foreman_home")
def test_workflow_run_refuses_code_without_the_flag_before_any_flow_run(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(CODE_WORKFLOW)
    out = cli.invoke(app, ["workflow", "run", str(path)], terminal_width=200)
    assert out.exit_code == 2, out.output  # refused before anything ran
    assert "needs --allow-code" in out.output and "Flow run" not in out.output


def test_naming_a_write_tool_without_its_switch_is_an_error_not_a_silent_drop() -> None:
    with pytest.raises(PolicyError, match=r"tool 'write_file' needs --allow-write"):
        RunPolicy.build(allowed_tools=["read_file", "write_file"], check_workspace=False)
    assert "write_file" in RunPolicy.build(allow_write=True, check_workspace=False).allowed_tools
    with pytest.raises(errors.ConfigurationError, match="is not a folder"):
        RunPolicy.build(workspace="/no/such/folder")


def test_only_the_policy_turns_writing_on_in_the_tools(tmp_path: Path) -> None:
    assert tool_env(RunPolicy.build(workspace=tmp_path)).workspace.allow_write is False
    assert tool_env(RunPolicy.build(workspace=tmp_path, allow_write=True)).workspace.allow_write is True


class SetupErrorRunner:
    """A node runner whose every attempt hits a configuration error."""

    def __init__(self) -> None:
        self.attempts = 0

    def choose_agent(self, sub: SubTask, tried: list[str]) -> str | None:
        return "generalist"

    def run(self, sub: SubTask, inputs: dict[str, Any], agent: str | None, max_llm_calls: int, usage: Usage) -> Any:
        self.attempts += 1
        raise errors.UnknownAgentError("wizard", ["generalist"])


@pytest.mark.usefixtures("prefect_server", "foreman_home")
def test_prefect_does_not_retry_a_configuration_error(tmp_path: Path) -> None:
    runner = SetupErrorRunner()
    scope = build_scope(registry, RunPolicy.build(workspace=tmp_path))
    plan = Plan(tasks=[SubTask(id="a", title="a", instructions="i", agent="generalist", retries=3,
                               retry_backoff_s=0)])
    engine = Engine(runner, scope, run_store())

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def go() -> Any:
        return engine.run(validate_plan(plan, scope), "no-retry")

    report = go()
    assert report.outcomes["a"].status == NodeStatus.FAILED
    assert runner.attempts == 1, "a setup error fails the same way every time: no retries"
    assert "unknown agent 'wizard'" in (report.outcomes["a"].error or "")


@pytest.mark.usefixtures("prefect_server", "foreman_home")
def test_resuming_an_unknown_run_key_is_an_error_not_a_fresh_start(workspace: Path) -> None:
    out = cli.invoke(app, ["run", "anything", "--workspace", str(workspace), "--resume", "no-such-key"],
                     terminal_width=200)
    assert out.exit_code == 2, out.output  # refused before a flow run exists
    assert "--resume 'no-such-key': no run with this key" in out.output


def _one_step_planner() -> ScriptedChatModel:
    def respond(turn: Any) -> Any:
        text = "\n".join(str(m.content) for m in turn.messages)
        if "a plan for this objective" in text:
            return succeed_model(rationale="one step", tasks=[
                {"id": "tell", "title": "Tell", "instructions": "Say five.", "agent": "generalist"}])
        if "Answer the objective" in text:
            return succeed("Five files.")
        return succeed("five")

    return ScriptedChatModel(responder=respond)


@pytest.mark.usefixtures("prefect_server")
def test_run_json_prints_the_whole_result_on_stdout(foreman_home, workspace: Path) -> None:
    with use_model(_one_step_planner()):
        out = cli.invoke(app, ["run", "Draft a short note on the files", "--workspace", str(workspace), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["status"] == "COMPLETED" and data["answer"] == "Five files."
    assert data["statuses"] == {"tell": "COMPLETED"} and data["results"] == {"tell": "five"}
    assert data["run_key"] and data["flow_run_id"] and {"llm_calls", "tokens", "plan"} <= set(data)


def test_every_error_pickles_with_its_fields_and_maps_to_an_exit_code() -> None:
    samples = [
        errors.UnknownAgentError("wizard", ["a", "b"]), errors.UnknownToolError("teleport", ["read_file"]),
        errors.StateFileError("/tmp/x.sqlite3", "file is not a database"), PlanInvalid(["a: bad"]),
        WorkflowError(Path("/tmp/w.yaml"), ["a: bad"]), errors.PlanningFailed(["bad"], 2),
        errors.TaskNotCompleted("t", "FAILED", "why"), errors.ToolRefused("read_file", "outside"),
        errors.RunFailed({"answer": "x"}),
    ]
    for error in samples:
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error)
        assert again.__dict__.keys() == error.__dict__.keys()
    codes = {type(e).__name__: errors.exit_code(e) for e in samples}
    assert codes["UnknownAgentError"] == 2 and codes["PlanInvalid"] == 3 and codes["ToolRefused"] == 4
    assert codes["TaskNotCompleted"] == 1
    assert not errors.is_retryable(errors.UnknownAgentError("x", [])) and errors.is_retryable(RuntimeError())


def test_scope_reads_its_tools_from_the_policy() -> None:
    policy = RunPolicy.build(allowed_tools=["read_file"], check_workspace=False)
    scope = PlanScope(agents={"a": AgentInfo(capabilities=["c"], tools=["read_file"])}, policy=policy)
    assert scope.allowed_tools == ["read_file"] and scope.approval_tools == list(policy.approval_tools)
