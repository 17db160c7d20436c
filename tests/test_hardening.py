"""The attack corpus of hardening round two (issue #30): each case failed before its fix.

Escapes first: a plan handed to a flow as a parameter may not run programs unless the run
allows code, and a step that may write may not rewrite what a script step of the run executes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from foreman.agents.models import use_model
from foreman.agents.registry import registry
from foreman.agents.scripted import ScriptedChatModel, ScriptedReply, Turn, call, succeed
from foreman.engine.cf_runner import build_scope
from foreman.engine.plan import Plan, ScriptStep, SubTask
from foreman.engine.policy import RunPolicy
from foreman.engine.scripts import code_paths
from foreman.engine.validate import validate_plan
from foreman.errors import PlanInvalid, ToolRefused
from foreman.tools.files import write_file
from foreman.tools.workspace import Workspace


def shell_plan(target: Path) -> Plan:
    return Plan(objective="x", tasks=[SubTask(id="pwn", title="t", instructions="i",
                                              script=ScriptStep(path="/bin/sh", args=["-c", f"id > {target}"]))])


# --- escape 1: the hidden `plan` parameter ------------------------------------------------


def test_a_script_step_outside_a_workflow_file_needs_allow_code(tmp_path: Path) -> None:
    plan = shell_plan(tmp_path / "owned")
    with pytest.raises(PlanInvalid, match="pwn.script: a script step runs '/bin/sh' outside the sandbox"):
        validate_plan(plan, build_scope(registry, RunPolicy.build(check_workspace=False)))
    allowed = build_scope(registry, RunPolicy.build(allow_code=True, check_workspace=False))
    assert validate_plan(plan, allowed).plan.ids == ["pwn"]
    from_file = build_scope(registry, RunPolicy.build(check_workspace=False)).model_copy(
        update={"scripts_from_file": True})
    assert validate_plan(plan, from_file).plan.ids == ["pwn"]


@pytest.mark.usefixtures("prefect_server", "foreman_home")
def test_plan_and_run_given_a_shell_plan_runs_nothing_without_allow_code(workspace: Path, tmp_path: Path) -> None:
    from foreman.flows.planner import plan_and_run

    target = tmp_path / "owned"
    model = ScriptedChatModel(responder=lambda turn: succeed("x"))
    with use_model(model):
        state = plan_and_run(objective="x", workspace=str(workspace), ground=False, plan=shell_plan(target),
                             return_state=True)
    assert state.is_failed()
    assert "outside the sandbox" in str(state.result(raise_on_failure=False))
    assert not target.exists()


# --- escape 2: write access that becomes code execution ------------------------------------


def test_write_file_refuses_what_a_script_step_runs_and_modules_beside_it(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "run_me.py").write_text("print('mine')\n")
    steps = [SubTask(id="run", title="r", instructions="r", script=ScriptStep(path="jobs/run_me.py"))]
    ws = Workspace(root=tmp_path, allow_write=True, max_read_bytes=1 << 20, runs_as_code=code_paths(steps, tmp_path))
    for path in ("jobs/run_me.py", "jobs/json.py", "./jobs/../jobs/run_me.py"):
        with pytest.raises(ToolRefused, match="run by a script step of this run"):
            write_file(ws, path, "import os; os.system('id')\n")
    assert (tmp_path / "jobs" / "run_me.py").read_text() == "print('mine')\n"
    write_file(ws, "jobs/notes.md", "fine")  # other files, and .py files elsewhere, stay writable
    write_file(ws, "elsewhere.py", "x = 1\n")


@pytest.mark.usefixtures("prefect_server", "foreman_home")
def test_an_agent_step_with_write_access_cannot_rewrite_the_script_a_later_step_runs(tmp_path: Path) -> None:
    from foreman.flows.workflow import run_workflow

    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "run_me.py").write_text("import json\nprint(json.dumps({'ran': 'original'}))\n")
    (folder / "workflow.yaml").write_text(
        "name: rewrite\nworkspace: .\nsteps:\n"
        "  - {id: edit, title: STEP-EDIT, agent: writer, instructions: Improve run_me.py., tools: [write_file]}\n"
        "  - {id: run, script: {path: run_me.py}, depends_on: [edit]}\n")
    evil = "import pathlib\npathlib.Path('PWNED').write_text('x')\nprint('{\"ran\": \"evil\"}')\n"

    turns: list[Turn] = []

    def respond(turn: Turn) -> ScriptedReply:
        turns.append(turn)
        return call("write_file", path="run_me.py", content=evil) if len(turns) == 1 else succeed("done")

    with use_model(ScriptedChatModel(responder=respond)):
        state = run_workflow(path=str(folder / "workflow.yaml"), allow_write=True, ground=False, return_state=True)
    assert not (folder / "PWNED").exists()
    assert "original" in (folder / "run_me.py").read_text()
    result = state.result(raise_on_failure=False)
    assert getattr(result, "statuses", {}).get("run") == "COMPLETED", result
    assert "run by a script step of this run" in "\n".join(str(m.content) for m in turns[-1].messages)


# --- terminal escapes from notes and stored content ----------------------------------------


def test_what_the_cli_prints_carries_no_escape_sequence_from_the_content() -> None:
    import io

    from rich.table import Table
    from rich.text import Text

    from foreman.terminal import SafeConsole

    hostile = "ok\x1b[2J\x1b]0;pwned\x07 fake\rnotice\x9b31m"
    out = io.StringIO()
    console = SafeConsole(file=out, force_terminal=True, color_system="standard", width=200)
    console.print(Text.assemble(("answer: ", "bold"), hostile))
    table = Table("fact")
    table.add_row(hostile)
    console.print(table)
    console.print(hostile, markup=False, highlight=False)
    printed = out.getvalue()
    import re

    assert "\x1b" not in re.sub(r"\x1b\[[0-9;]*m", "", printed), "only Rich's own styling escapes remain"
    assert "\x07" not in printed and "\r" not in printed and "\x9b" not in printed
    assert printed.count("ok␛[2J␛]0;pwned") == 3, "the content is shown, as signs"


# --- secrets in settings are never printed -----------------------------------------------------


def test_a_password_in_the_model_url_is_not_printed_or_logged() -> None:
    from foreman.agents.models import describe_model
    from foreman.settings import Settings

    settings = Settings(model="openai-compatible/qwen", base_url="http://sam:hunter2@llm.lan:8080/v1?api_key=abc123")
    line = describe_model(settings)
    assert "hunter2" not in line and "abc123" not in line
    assert "http://sam:***@llm.lan:8080/v1?api_key=***" in line


# --- leaks between users ----------------------------------------------------------------------


def test_one_users_past_runs_never_reach_another_users_planner(tmp_path: Path) -> None:
    from foreman.engine.store import RunStore

    store = RunStore(tmp_path / "runs.sqlite3")
    for key, objective, owner in [("a1", "remember my bank PIN is 4821 for the bank form", "alice"),
                                  ("b1", "fill in the bank form for the gym", "bob"),
                                  ("n1", "summarize the bank statements folder", None)]:
        store.record_run(key, objective, "COMPLETED", None, {}, [], 0.0, 1.0, "done")
        if owner:
            store.set_owner(key, owner)
    seen_by_bob = [r.objective for r in store.similar_runs("help me with the bank form", owner="bob")]
    assert seen_by_bob == ["fill in the bank form for the gym"]
    assert [r.objective for r in store.similar_runs("bank PIN form", owner="alice")][0].startswith("remember my")
    assert [r.objective for r in store.similar_runs("bank form")] == ["summarize the bank statements folder"]


@pytest.mark.usefixtures("prefect_server")
def test_a_run_started_for_a_user_knows_whose_it_is() -> None:
    from prefect import flow, tags

    from foreman.flows.planner import run_owner

    @flow
    def whose() -> str | None:
        return run_owner()

    with tags("user:alice"):
        assert whose() == "alice"
    assert whose() is None


@pytest.mark.usefixtures("foreman_home")
def test_each_chat_user_has_their_own_line_history_and_forget_user_deletes_it() -> None:
    from typer.testing import CliRunner

    from foreman.cli import app
    from foreman.cli.chat import history_file
    from foreman.settings import get_settings

    home = get_settings().home
    alice, bob = history_file(home, "alice"), history_file(home, "bob")
    assert alice != bob
    alice.parent.mkdir(parents=True, exist_ok=True)
    alice.write_text("my locker code is 3141\n")
    bob.write_text("hello\n")
    forgot = CliRunner().invoke(app, ["memory", "forget-user", "--user", "alice", "--yes"], terminal_width=200)
    assert forgot.exit_code == 0 and "their chat line history" in forgot.output, forgot.output
    assert not alice.exists() and bob.read_text() == "hello\n"


# --- settings errors are one line, exit 2 -------------------------------------------------------


@pytest.mark.parametrize(("variable", "value", "said"), [
    ("FOREMAN_LOCAL_IDLE_MINUTES", "abc", "FOREMAN_LOCAL_IDLE_MINUTES='abc': Input should be a valid number"),
    ("FOREMAN_HOME", "/etc/passwd", "/etc/passwd is not a folder"),
])
def test_a_setting_that_does_not_read_is_one_line_and_exit_2(variable: str, value: str, said: str) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, variable: value}
    done = subprocess.run([str(Path(sys.executable).parent / "foreman"), "model"], env=env, capture_output=True, text=True,
                          timeout=120)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(lines) == 1 and said in lines[0] and "Traceback" not in lines[0]


# --- small files that crashed or hung every run in their workspace -----------------------------


@pytest.mark.usefixtures("foreman_home")
def test_deep_nesting_and_a_name_that_is_not_utf8_are_skipped_and_the_rest_is_read(tmp_path: Path) -> None:
    import os

    from foreman.engine.grounding import ground
    from foreman.engine.policy import RunPolicy

    root = tmp_path / "ws"
    root.mkdir()
    (root / "deep.json").write_text("[" * 50_000 + "]" * 50_000)
    (root / "deep.yaml").write_text("[" * 100_000 + "]" * 100_000)
    (root / "ok.csv").write_text("host,owner\nnas01,Ana\n")
    with open(os.path.join(os.fsencode(root), b"caf\xe9.csv"), "w") as handle:  # a Latin-1 name
        handle.write("a,b\n1,2\n")
    found = ground("who owns nas01", RunPolicy.build(workspace=root))
    assert found.tables is not None and list(found.tables.tables) == ["ok"]
    assert found.tables.skipped["caf\ufffd.csv"] == "its name is not UTF-8; rename it"
    assert found.tables.skipped["deep.json"].startswith("malformed")
    assert any("not UTF-8" in reason for reason in found.indexed.skipped)
    assert any(p.path == "ok.csv" for p in found.passages)


@pytest.mark.usefixtures("prefect_server", "foreman_home")
def test_the_default_allow_list_does_not_reach_foremans_own_prefect_api() -> None:
    import httpx
    from prefect.settings import PREFECT_API_URL

    from foreman.settings import get_settings
    from foreman.tools.http import HttpPolicy, fetch_url

    api = httpx.URL(PREFECT_API_URL.value())
    policy = HttpPolicy.from_settings(get_settings())  # allowed: 127.0.0.1 and localhost, every port
    assert api.port in policy.own_ports
    for host in ("127.0.0.1", "localhost"):
        with pytest.raises(ToolRefused, match="Foreman's own service"):
            fetch_url(f"http://{host}:{api.port}/api/health", policy)
    named = policy.model_copy(update={"allowed_hosts": [f"127.0.0.1:{api.port}"]})
    assert "true" in fetch_url(f"http://127.0.0.1:{api.port}/api/health", named).lower()


@pytest.mark.parametrize("body", [
    "steps:\n  - " + "[" * 50_000 + "]" * 50_000 + "\n",  # libyaml's C parser overflowed its stack: SIGSEGV
    "a0: &a0 {x: 1}\n" + "".join(f"a{i}: &a{i}\n  <<: [*a{i - 1}, *a{i - 1}]\n  y{i}: 1\n" for i in range(1, 40))
    + "name: bomb\nsteps: []\n",  # a 1 KB merge-key chain hung the check for minutes
])
def test_a_workflow_file_that_would_crash_or_hang_the_yaml_parser_is_refused_in_one_line(
        tmp_path: Path, body: str) -> None:
    import subprocess
    import sys

    path = tmp_path / "bomb.yaml"
    path.write_text(body)
    done = subprocess.run([str(Path(sys.executable).parent / "foreman"), "workflow", "check", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.returncode, done.stdout[-500:], done.stderr[-500:])
    assert "not readable safely" in done.stdout + done.stderr


@pytest.mark.usefixtures("foreman_home")
def test_an_alias_bomb_in_the_workspace_is_skipped_in_seconds(tmp_path: Path) -> None:
    import time

    from foreman.engine.grounding import ground
    from foreman.engine.policy import RunPolicy

    root = tmp_path / "ws"
    root.mkdir()
    (root / "bomb.yaml").write_text("a0: &a0 {x: 1}\n" + "".join(
        f"a{i}: &a{i}\n  <<: [*a{i - 1}, *a{i - 1}]\n  y{i}: 1\n" for i in range(1, 40)))
    (root / "notes.md").write_text("# Notes\n\nThe NAS is called vault.\n")
    started = time.monotonic()
    found = ground("what is the NAS called", RunPolicy.build(workspace=root))
    assert time.monotonic() - started < 30
    assert "alias bomb" in found.tables.skipped["bomb.yaml"]
    assert any(p.path == "notes.md" for p in found.passages)
