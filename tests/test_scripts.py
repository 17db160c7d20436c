"""Script steps: the user's scripts inside a plan, with results, conditions, retries and timeouts."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from foreman.agents.registry import registry
from foreman.engine.cf_runner import ControlFlowRunner, build_scope
from foreman.engine.executor import Engine, NodeStatus, RunReport, RunStatus
from foreman.engine.plan import Plan, ScriptStep, SubTask
from foreman.engine.policy import RunPolicy
from foreman.engine.store import run_store
from foreman.engine.validate import PlanInvalid, validate_plan
from foreman.settings import get_settings
from foreman.tools.catalog import ToolEnv


def script_step(id: str, path: str, **kw) -> SubTask:
    kw.setdefault("retries", 0)
    kw.setdefault("retry_backoff_s", 0)
    return SubTask(id=id, title=id, instructions=f"run {path}", script=ScriptStep(path=path), **kw)


def run(plan: Plan, base: Path) -> RunReport:
    settings = get_settings()
    policy = RunPolicy.build(workspace=base)
    scope = build_scope(registry, policy)
    runner = ControlFlowRunner(ToolEnv.from_settings(settings, workspace=base), registry, settings, policy=policy,
                               script_base=base)
    engine = Engine(runner, scope, run_store())

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
    def go() -> RunReport:
        return engine.run(validate_plan(plan, scope), "scripts")

    return go()


@pytest.fixture()
def scripts(tmp_path: Path) -> Path:
    (tmp_path / "collect.py").write_text('import json\nprint("collecting")\nprint(json.dumps({"count": 5}))\n')
    (tmp_path / "edit.py").write_text(
        "import json, os\ninputs = json.loads(os.environ['FOREMAN_INPUTS'])\n"
        "print(json.dumps({'doubled': inputs['collect']['count'] * 2}))\n"
    )
    (tmp_path / "upload.py").write_text("print('uploaded')\n")
    (tmp_path / "flaky.py").write_text(
        "import pathlib, sys\nmark = pathlib.Path('tries')\nn = int(mark.read_text()) if mark.exists() else 0\n"
        "mark.write_text(str(n + 1))\nsys.exit(1 if n == 0 else 0)\n"
    )
    (tmp_path / "hang.py").write_text("import time\ntime.sleep(60)\n")
    return tmp_path


@pytest.mark.usefixtures("prefect_server", "foreman_home")
def test_scripts_run_in_order_pass_results_and_a_false_condition_skips(scripts: Path) -> None:
    report = run(Plan(tasks=[
        script_step("collect", "collect.py"),
        script_step("edit", "edit.py", depends_on=["collect"]),
        script_step("upload", "upload.py", depends_on=["edit"], condition="edit.doubled > 100"),
    ]), scripts)
    assert report.outcomes["collect"].result == {"count": 5}
    assert report.outcomes["edit"].result == {"doubled": 10}
    assert report.outcomes["upload"].status == NodeStatus.SKIPPED
    assert report.status == RunStatus.COMPLETED


@pytest.mark.usefixtures("prefect_server", "foreman_home")
def test_failing_script_is_retried_and_a_hanging_one_is_killed_at_its_timeout(scripts: Path) -> None:
    report = run(Plan(on_failure="continue", tasks=[
        script_step("flaky", "flaky.py", retries=1),
        script_step("hang", "hang.py", timeout_s=1.5),
    ]), scripts)
    assert report.outcomes["flaky"].status == NodeStatus.COMPLETED
    assert report.outcomes["flaky"].attempts == 2
    assert report.outcomes["flaky"].result == {"exit_code": 0, "output_tail": ""}
    assert report.outcomes["hang"].status == NodeStatus.FAILED
    assert "timeout" in report.outcomes["hang"].error.lower()
    assert report.status == RunStatus.FAILED  # "continue" ran the rest; the run still failed


def test_script_step_with_an_agent_or_tools_is_refused() -> None:
    scope = build_scope(registry, RunPolicy.build(allowed_tools=["read_file"], check_workspace=False))
    bad = SubTask(id="s", title="s", instructions="i", agent="coder", tools=["read_file"],
                  script=ScriptStep(path="x.py"))
    with pytest.raises(PlanInvalid) as info:
        validate_plan(Plan(tasks=[bad]), scope)
    text = str(info.value)
    assert "s.script: a script step has no agent" in text and "s.tools: a script step gets no agent tools" in text
