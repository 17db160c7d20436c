"""Script steps: the user's scripts inside a plan, with results, conditions, retries and timeouts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from foreman.agents.registry import registry
from foreman.engine.cf_runner import ControlFlowRunner, build_scope
from foreman.engine.executor import Engine, NodeStatus, RunReport, RunStatus
from foreman.engine.plan import Plan, ScriptStep, SubTask
from foreman.engine.policy import RunPolicy
from foreman.engine.scripts import INHERITED, run_script
from foreman.engine.store import run_store
from foreman.engine.validate import PlanInvalid, validate_plan
from foreman.errors import ScriptFailed
from foreman.settings import get_settings
from foreman.tools.catalog import ToolEnv


def script_step(id: str, path: str, **kw) -> SubTask:
    kw.setdefault("retries", 0)
    kw.setdefault("retry_backoff_s", 0)
    return SubTask(id=id, title=id, instructions=f"run {path}", script=ScriptStep(path=path), **kw)


def run(plan: Plan, base: Path) -> RunReport:
    settings = get_settings()
    policy = RunPolicy.build(workspace=base)
    scope = build_scope(registry, policy).model_copy(update={"scripts_from_file": True})  # as a workflow file
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
    scope = scope.model_copy(update={"scripts_from_file": True})
    bad = SubTask(id="s", title="s", instructions="i", agent="coder", tools=["read_file"],
                  script=ScriptStep(path="x.py"))
    with pytest.raises(PlanInvalid) as info:
        validate_plan(Plan(tasks=[bad]), scope)
    text = str(info.value)
    assert "s.script: a script step has no agent" in text and "s.tools: a script step gets no agent tools" in text


# --- what a script sees, and that it never outlives its runner ---------------------------


def test_script_gets_a_clean_environment_plus_exactly_its_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "FOREMAN_API_KEY", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "secret")
    monkeypatch.setenv("LC_TIME", "C")
    monkeypatch.setenv("TZ", "Europe/Berlin")
    (tmp_path / "env.py").write_text("import json, os\nprint(json.dumps(dict(os.environ)))\n")
    step = ScriptStep(path="env.py", env={"GREETING": "hello", "FOREMAN_PARAMS": '{"n": 1}'})
    seen = run_script(step, timeout_s=30, base=tmp_path, inputs={"earlier": {"count": 2}})
    assert "OPENAI_API_KEY" not in seen and "ANTHROPIC_API_KEY" not in seen and "FOREMAN_API_KEY" not in seen
    assert "AWS_SECRET_ACCESS_KEY" not in seen and not any(k.startswith("PREFECT_") for k in seen)
    assert seen["GREETING"] == "hello" and json.loads(seen["FOREMAN_PARAMS"]) == {"n": 1}
    assert json.loads(seen["FOREMAN_INPUTS"]) == {"earlier": {"count": 2}}
    assert seen["LC_TIME"] == "C" and seen["TZ"] == "Europe/Berlin" and seen["PATH"] == os.environ["PATH"]
    assert {k for k in seen if not k.startswith("LC_")} <= {*INHERITED, "GREETING", "FOREMAN_PARAMS", "FOREMAN_INPUTS"}


def test_exit_codes_signals_and_unstartable_scripts_read_as_before(tmp_path: Path) -> None:
    (tmp_path / "three.py").write_text("import sys\nprint('bad', file=sys.stderr)\nsys.exit(3)\n")
    (tmp_path / "term.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n")
    (tmp_path / "not_executable.sh").write_text("#!/bin/sh\necho hi\n")
    errors = {}
    for name in ("three.py", "term.py", "not_executable.sh", "missing.sh"):
        with pytest.raises(ScriptFailed) as info:
            run_script(ScriptStep(path=name), timeout_s=30, base=tmp_path)
        errors[name] = str(info.value)
    assert errors["three.py"] == "three.py exited 3; stderr tail: 'bad\\n'"
    assert errors["term.py"].startswith("term.py exited -15;")  # the guard passes the signal on
    assert errors["not_executable.sh"].startswith("not_executable.sh could not start: [Errno 13] Permission denied")
    assert errors["missing.sh"].startswith("missing.sh could not start: [Errno 2] No such file or directory")


RUNNER = """\
import sys, threading
from pathlib import Path
from foreman.engine.plan import ScriptStep
from foreman.engine.scripts import run_script
step = ScriptStep(path="spawner.py")
worker = threading.Thread(target=run_script, args=(step,), kwargs={"timeout_s": 60, "base": Path(sys.argv[1])})
worker.start()  # from a worker thread, as Prefect's task runner does
worker.join()
"""


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in {"Z", "X"}
    except FileNotFoundError:
        return True


def test_a_script_and_everything_it_started_die_when_its_runner_is_killed(tmp_path: Path) -> None:
    (tmp_path / "spawner.py").write_text(
        "import json, os, pathlib, subprocess, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "pathlib.Path('pids.tmp').write_text(json.dumps([os.getppid(), os.getpid(), child.pid]))\n"
        "os.replace('pids.tmp', 'pids')\n"
        "time.sleep(3)\n"
        "pathlib.Path('side-effect').write_text('done')\n")
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(tmp_path)], cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.time() + 60
        while not (tmp_path / "pids").exists():
            assert time.time() < deadline and runner.poll() is None, "the script never started"
            time.sleep(0.05)
        guard, script, grandchild = json.loads((tmp_path / "pids").read_text())
    finally:
        os.kill(runner.pid, signal.SIGKILL)  # the runner alone, as `kill -9 PID` does
        runner.wait()
    deadline = time.time() + 5
    while not all(_gone(pid) for pid in (guard, script, grandchild)):
        assert time.time() < deadline, "the script outlived its runner"
        time.sleep(0.05)
    time.sleep(3.5)
    assert not (tmp_path / "side-effect").exists()
