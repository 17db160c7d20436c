"""Workflow files: loading errors name file, step and field; init; a script workflow runs end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from foreman.agents.registry import registry
from foreman.cli import app
from foreman.engine.cf_runner import build_scope
from foreman.engine.policy import RunPolicy
from foreman.engine.workflow import WorkflowError, load_workflow, skeleton
from foreman.errors import ConfigurationError

EXAMPLE = Path(__file__).resolve().parent.parent / "workflows" / "log_pipeline" / "workflow.yaml"
runner = CliRunner()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    return path


def test_the_shipped_example_loads() -> None:
    workflow = load_workflow(EXAMPLE, build_scope(registry, RunPolicy.build(check_workspace=False)))
    assert workflow.plan.order == ["collect", "redact", "summarize", "upload"]
    assert workflow.schedule.cron == "0 3 * * *"
    assert workflow.plan.plan.task("upload").approval


def test_errors_name_the_file_the_step_and_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, """
name: broken
steps:
  - id: a
    script: {path: missing.py}
  - id: b
    agent: wizard
    instructions: x
    depends_on: [a, ghost]
  - id: c
    agent: generalist
    instructions: y
    retries: 99
""")
    with pytest.raises(WorkflowError) as info:
        load_workflow(path, build_scope(registry, RunPolicy.build(check_workspace=False)))
    text = str(info.value)
    assert "wf.yaml: a.script.path: 'missing.py' does not exist" in text
    assert "wf.yaml: steps[2] (c).retries:" in text


def test_plan_level_errors_are_reported_after_the_file_checks(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("print(1)\n")
    path = write(tmp_path, """
name: cyclic
steps:
  - {id: a, script: a.py, depends_on: [b]}
  - {id: b, script: a.py, depends_on: [a]}
  - {id: c, agent: wizard, instructions: x}
""")
    with pytest.raises(WorkflowError) as info:
        load_workflow(path, build_scope(registry, RunPolicy.build(check_workspace=False)))
    text = str(info.value)
    assert "dependency cycle" in text and "c.agent: unknown agent 'wizard'" in text


def test_init_writes_one_step_per_script(tmp_path: Path) -> None:
    for name in ["b_upload.py", "a_collect.py", "_helper.py"]:
        (tmp_path / name).write_text("print(1)\n")
    out = runner.invoke(app, ["workflow", "init", str(tmp_path)])
    assert out.exit_code == 0, out.output
    workflow = load_workflow(tmp_path / "workflow.yaml", build_scope(registry, RunPolicy.build(check_workspace=False)))
    assert workflow.plan.order == ["a_collect", "b_upload"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WorkflowError, match="no Python scripts"):
        skeleton(empty)


def test_check_command_fails_with_the_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nsteps:\n  - {id: a, agent: wizard, instructions: i}\n")
    out = runner.invoke(app, ["workflow", "check", str(path)], terminal_width=200)
    assert out.exit_code == 2  # an invalid workflow: refused, nothing ran
    assert "unknown agent 'wizard'" in out.output


@pytest.mark.usefixtures("prefect_server", "foreman_home")
def test_script_workflow_runs_with_conditions(tmp_path: Path) -> None:
    (tmp_path / "count.py").write_text('import json\nprint(json.dumps({"n": 2}))\n')
    (tmp_path / "big.py").write_text("print('big')\n")
    (tmp_path / "small.py").write_text("print('small')\n")
    path = write(tmp_path, """
name: branches
steps:
  - {id: count, script: count.py}
  - {id: big, script: big.py, depends_on: [count], condition: count.n > 5}
  - {id: small, script: small.py, depends_on: [count], condition: count.n <= 5}
""")
    out = runner.invoke(app, ["workflow", "run", str(path)], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "COMPLETED" in out.output
    lines = {line.split()[1]: line for line in out.output.splitlines() if line.startswith("│")}
    assert "SKIPPED" in lines["big"] and "COMPLETED" in lines["small"]


def test_schedule_workspace_and_failure_rule_errors_name_the_field(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("print(1)\n")
    bad = {
        "schedule: {cron: '0 25 * * *'}": "schedule: Invalid cron string",
        "schedule: {cron: '0 3 * * *', timezone: Mars/Base}": "Invalid timezone",
        "schedule: {cron: '0 3 * * *', interval_s: 60}": "exactly one of cron or interval_s",
        "workspace: nowhere": "workspace: 'nowhere' is not a folder",
        "on_failure: carry_on": "on_failure: Input should be 'fail_fast' or 'continue'",
    }
    for line, message in bad.items():
        path = write(tmp_path, f"name: x\n{line}\nsteps:\n  - {{id: a, script: a.py}}\n")
        with pytest.raises(WorkflowError) as info:
            load_workflow(path, build_scope(registry, RunPolicy.build(check_workspace=False)))
        assert message in str(info.value), (line, str(info.value))


def test_mandatory_approval_tools_reach_workflow_steps_and_a_misspelt_tool_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nsteps:\n  - {id: look, agent: researcher, instructions: Look., tools: [fetch_url]}\n"
                           "  - {id: chat, agent: generalist, instructions: Chat.}\n")
    policy = RunPolicy.build(approval_tools=["fetch_url"], check_workspace=False)
    workflow = load_workflow(path, build_scope(registry, policy))
    assert workflow.plan.approvals_added == ["look"]  # granted fetch_url; the generalist step has no tools
    assert workflow.plan.plan.task("look").approval and not workflow.plan.plan.task("chat").approval
    with pytest.raises(ConfigurationError, match="unknown tool.*write_files.*known tools"):
        RunPolicy.build(approval_tools=["write_files"], check_workspace=False)


@pytest.mark.usefixtures("prefect_server", "foreman_home")
def test_approval_on_the_terminal_for_runs_without_a_prefect_ui(tmp_path: Path) -> None:
    from foreman.tools.audit import audit_log

    (tmp_path / "tag.py").write_text(
        "import json, os\nprint(json.dumps(json.loads(os.environ['FOREMAN_INPUTS'])['_approval']['value']))\n")
    path = write(tmp_path, "name: release\nsteps:\n"
                           "  - {id: tag, script: tag.py, approval: true, ask: 'Which tag?'}\n")
    out = runner.invoke(app, ["workflow", "run", str(path), "--approve-here"], input="y\nship it\nv2.1\n",
                        terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "Approve step `tag`" in out.output or "Approve step tag" in out.output
    assert "v2.1" in out.output  # the step's result: the typed answer
    *_, decision = audit_log().decisions()
    assert (decision.step, decision.decision, decision.comment, decision.value) == ("tag", "approved", "ship it", "v2.1")

    closed = runner.invoke(app, ["workflow", "run", str(path), "--approve-here"], input="", terminal_width=200)
    assert closed.exit_code == 0, closed.output  # rejected by default: the step does not run, the run completes
    lines = {line.split()[1]: line for line in closed.output.splitlines() if line.startswith("│")}
    assert "REJECTED" in lines["tag"]
    assert audit_log().decisions()[-1].timed_out


PARAMS_WORKFLOW = """
name: report
schedule: {cron: "0 6 * * *"}
params:
  folder: {type: str, description: Where to look}
  limit: 3
  loud: false
steps:
  - id: scan
    script: {path: scan.py, args: ["${folder}", "--limit=${limit}", "$${not_a_param}"], env: {MODE: "limit ${limit}"}}
  - id: alert
    script: alert.py
    depends_on: [scan]
    condition: scan.found > ${limit} or ${loud}
  - id: tell
    title: Tell about ${folder}
    agent: writer
    instructions: Say what was found in ${folder}.
    depends_on: [scan]
"""


def params_workflow(tmp_path: Path) -> Path:
    (tmp_path / "scan.py").write_text(
        "import json, os, sys\nprint(json.dumps({'args': sys.argv[1:], 'mode': os.environ['MODE'], "
        "'params': json.loads(os.environ['FOREMAN_PARAMS']), 'found': 5}))\n")
    (tmp_path / "alert.py").write_text("print('alert')\n")
    return write(tmp_path, PARAMS_WORKFLOW)


def test_params_fill_titles_instructions_args_env_and_conditions(tmp_path: Path) -> None:
    path = params_workflow(tmp_path)
    workflow = load_workflow(path, build_scope(registry, RunPolicy.build(check_workspace=False)), {"folder": "/srv/logs", "limit": "7"})
    assert workflow.values == {"folder": "/srv/logs", "limit": 7, "loud": False}  # "7" typed on a CLI is an int
    plan = workflow.plan.plan
    assert plan.task("scan").script.args == ["/srv/logs", "--limit=7", "${not_a_param}"]
    assert plan.task("scan").script.env["MODE"] == "limit 7"
    assert plan.task("alert").condition == "scan.found > 7 or false"  # values become literals
    assert (plan.task("tell").title, plan.task("tell").instructions) == \
        ("Tell about /srv/logs", "Say what was found in /srv/logs.")
    other = load_workflow(path, build_scope(registry, RunPolicy.build(check_workspace=False)), {"folder": "/srv/logs", "limit": 8})
    assert other.plan.plan.task("scan").fingerprint() != plan.task("scan").fingerprint()  # no stale reuse


def test_bad_params_are_refused_with_every_reason_and_nothing_runs(tmp_path: Path) -> None:
    path = params_workflow(tmp_path)
    with pytest.raises(WorkflowError) as info:
        load_workflow(path, build_scope(registry, RunPolicy.build(check_workspace=False)), {"limit": "many", "colour": "red"})
    text = str(info.value)
    assert "params.colour: this workflow has no parameter 'colour'; it has: folder, limit, loud" in text
    assert "params.limit: 'many' is not a valid int" in text
    assert "params.folder: required; give it with `--param folder=VALUE`" in text
    assert "unknown parameter" not in text  # ${limit} is declared: no second, misleading error

    path.write_text(PARAMS_WORKFLOW.replace("${folder}\", \"--limit", "${foldr}\", \"--limit")
                    .replace("  loud: false", "  loud: [1]"))
    with pytest.raises(WorkflowError) as info:
        load_workflow(path, build_scope(registry, RunPolicy.build(check_workspace=False)), {"folder": "x"})
    assert "scan.script.args[0]: unknown parameter ${foldr}; known: folder, limit" in str(info.value)
    assert "params.loud: give a default value" in str(info.value)


def test_check_and_deploy_handle_required_params(tmp_path: Path) -> None:
    from foreman.flows.workflow import deployment_parameters

    path = params_workflow(tmp_path)
    out = runner.invoke(app, ["workflow", "check", str(path)], terminal_width=200)
    assert out.exit_code == 0, out.output  # the rest of the file is checked without a value
    assert "param folder (str): required - Where to look" in out.output and "param limit (int): default 3" in out.output
    with pytest.raises(WorkflowError, match="params.folder: required, and the schedule starts runs"):
        deployment_parameters(path)  # a scheduled run would have nobody to ask
    _, parameters = deployment_parameters(path, {"folder": "/srv/logs"})
    assert parameters == {"path": str(path), "params": {"folder": "/srv/logs", "limit": 3, "loud": False}}


@pytest.mark.usefixtures("prefect_server", "foreman_home")
def test_a_run_takes_params_from_the_command_line(tmp_path: Path) -> None:
    path = params_workflow(tmp_path)
    path.write_text(PARAMS_WORKFLOW.split("  - id: tell")[0])
    refused = runner.invoke(app, ["workflow", "run", str(path), "-p", "limit=3"], terminal_width=200)
    assert refused.exit_code == 2 and "params.folder: required" in refused.output

    out = runner.invoke(app, ["workflow", "run", str(path), "-p", "folder=logs", "--param", "limit=9"],
                        terminal_width=300)
    assert out.exit_code == 0, out.output
    lines = {line.split()[1]: line for line in out.output.splitlines() if line.startswith("│")}
    assert "SKIPPED" in lines["alert"]  # 5 found is not over 9
    assert "'args': ['logs', '--limit=9'" in lines["scan"]

    from foreman.flows.workflow import run_workflow  # as from Python, or the params form in the UI

    result = run_workflow(path=str(path), params={"folder": "logs", "loud": "yes"})
    assert result.statuses["alert"] == "COMPLETED"  # `or ${loud}` made the condition true
    assert result.results["scan"] == {"args": ["logs", "--limit=3", "${not_a_param}"], "mode": "limit 3",
                                      "params": {"folder": "logs", "limit": 3, "loud": True}, "found": 5}


def test_the_readme_example_workflow_is_valid(tmp_path: Path) -> None:
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [example] = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL) if b.startswith("name: chores")]
    for script in ("check_disk.py", "alert.py", "prune.py"):
        (tmp_path / script).write_text("print(1)\n")
    (tmp_path / "docs").mkdir()
    workflow = load_workflow(write(tmp_path, example), build_scope(registry, RunPolicy.build(check_workspace=False)), {"limit": "90"})
    assert workflow.plan.plan.task("alert").condition == "check.percent > 90 and not check.read_only"
    assert workflow.plan.plan.task("check").script.args == ["--mount", "/srv"]
