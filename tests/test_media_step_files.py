"""Files given to one workflow step or one chat turn: only that step's agent gets them, a bad one is
refused (naming the step) before the run starts, and a chat thread keeps the file's name, not its text."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from foreman.agents.models import use_model
from foreman.agents.scripted import ScriptedChatModel, ScriptedReply, Turn, succeed
from foreman.cli import app
from foreman.errors import PlanInvalid, WorkflowError

pytestmark = pytest.mark.usefixtures("foreman_home")
NOTE = "Rotate the backup disks every Friday; the offsite one lives at Sam's flat."
runner = CliRunner()


class Prompts:
    """A scripted model that keeps every prompt and answers each task with `reply`."""

    def __init__(self, reply: str = "done") -> None:
        self.seen: list[str] = []
        self.reply = reply
        self.lock = threading.Lock()
        self.model = ScriptedChatModel(responder=self.respond)

    def respond(self, turn: Turn) -> ScriptedReply:
        with self.lock:
            self.seen.append("\n".join(str(m.content) for m in turn.messages))
        return succeed(self.reply)

    def containing(self, phrase: str) -> list[str]:
        return [p for p in self.seen if phrase in p]


def workflow_file(folder: Path, files: str, *, script_files: bool = False) -> Path:
    """Two agent steps, the first given `files`; a script step too, given files when `script_files`."""
    (folder / "tick.py").write_text("print('{}')\n")
    path = folder / "wf.yaml"
    path.write_text(f"""
name: disks
workspace: .
params:
  doc: notes.txt
steps:
  - id: read_notes
    agent: generalist
    instructions: Say how often the backup disks rotate.
    files: {files}
  - id: other
    agent: generalist
    instructions: Say hello to the operator.
  - id: tick
    script: tick.py
{"    files: [notes.txt]" if script_files else ""}
""")
    return path


@pytest.mark.usefixtures("prefect_server")
def test_a_steps_file_reaches_that_step_only(tmp_path: Path) -> None:
    from foreman.flows.workflow import run_workflow

    (tmp_path / "notes.txt").write_text(NOTE + "\n")
    path = workflow_file(tmp_path, '["${doc}"]')  # a param names the file
    model = Prompts()
    with use_model(model.model):
        result = run_workflow(str(path), ground=False)

    assert set(result.statuses.values()) == {"COMPLETED"}
    [read] = model.containing("Say how often the backup disks rotate.")
    [other] = model.containing("Say hello to the operator.")
    assert NOTE in read and "[notes.txt]" in read
    assert NOTE not in other and "notes.txt" not in other
    assert result.plan.task("read_notes").files == ["notes.txt"]


def test_a_missing_file_or_an_image_needing_vision_is_refused_naming_the_step(tmp_path: Path) -> None:
    from foreman.flows.workflow import prepare_workflow

    with pytest.raises(WorkflowError, match=r"read_notes\.files: .*no-such\.pdf"):
        prepare_workflow(workflow_file(tmp_path, "[no-such.pdf]"), None)

    img = Image.new("RGB", (320, 200), "white")
    ImageDraw.Draw(img).ellipse((100, 50, 220, 150), fill=(0, 0, 200))
    img.save(tmp_path / "circle.png")
    with pytest.raises(WorkflowError, match=r"read_notes\.files: this objective needs a vision model.*"
                                            r"FOREMAN_LOCAL_MMPROJ_PATH"):
        prepare_workflow(workflow_file(tmp_path, "[circle.png]"), None)

    (tmp_path / "notes.txt").write_text(NOTE)
    with pytest.raises(WorkflowError, match=r"tick\.files: a script step is given no files"):
        prepare_workflow(workflow_file(tmp_path, "[]", script_files=True), None)


def test_workflow_check_and_run_refuse_a_bad_step_file_before_any_flow_run(
        tmp_path: Path, foreman_home: Path) -> None:
    (tmp_path / "notes.txt").write_text(NOTE)
    good = runner.invoke(app, ["workflow", "check", str(workflow_file(tmp_path, "[notes.txt]"))], terminal_width=300)
    assert good.exit_code == 0 and "files for read_notes: notes.txt" in good.output, good.output

    path = workflow_file(tmp_path, "[missing.txt]")
    for command in (["workflow", "check", str(path)], ["workflow", "run", str(path)]):
        out = runner.invoke(app, command, terminal_width=300)
        assert out.exit_code == 2, out.output
        assert "read_notes.files" in out.output and "missing.txt" in out.output
    assert not (foreman_home / "runs.sqlite3").exists()  # nothing ran, no run was recorded


def test_files_on_a_script_step_are_a_plan_error() -> None:
    from foreman.agents.registry import registry
    from foreman.engine.cf_runner import build_scope
    from foreman.engine.plan import Plan, ScriptStep, SubTask
    from foreman.engine.policy import RunPolicy
    from foreman.engine.validate import validate_plan

    step = SubTask(id="s", title="s", instructions="run", script=ScriptStep(path="x.py"), files=["a.txt"])
    with pytest.raises(PlanInvalid, match="s.files: a script step is given no files"):
        validate_plan(Plan(tasks=[step]), build_scope(registry, RunPolicy.build(check_workspace=False))
                      .model_copy(update={"scripts_from_file": True}))


@pytest.mark.usefixtures("prefect_server")
def test_a_chat_turn_with_a_file_answers_from_it_and_the_thread_keeps_only_its_name(workspace: Path) -> None:
    from foreman.flows.chat import chat_turn
    from foreman.tools.memory.service import memory_store

    (workspace / "rota.txt").write_text(NOTE + "\n")
    model = Prompts("Every Friday.")
    with use_model(model.model):
        result = chat_turn(user="priya", message="How often do the disks rotate?", workspace=str(workspace),
                           files=["rota.txt"])
        later = chat_turn(user="priya", message="And who keeps the offsite one?", thread=result.thread,
                          workspace=str(workspace))

    assert result.attached == ["rota.txt"] and later.attached == []
    first, second = model.seen[0], model.containing("And who keeps the offsite one?")[0]
    assert NOTE in first, "the file's text reached that turn"
    assert "[attached rota.txt (text)]" in second and NOTE not in second, "history holds the name only"
    turns = memory_store().turns("priya", result.thread)
    said = [t.content for t in turns if t.role == "user"]
    assert said[0] == "How often do the disks rotate?\n[attached rota.txt (text)]"
    assert all("Sam's flat" not in t.content for t in turns)


def test_chat_file_is_refused_before_the_first_turn(workspace: Path, foreman_home: Path) -> None:
    out = runner.invoke(app, ["chat", "--user", "priya", "--workspace", str(workspace), "--file", "nope.pdf"],
                        input="hello\n", terminal_width=300)
    assert out.exit_code == 2, out.output
    assert "nope.pdf" in out.output
    assert "priya>" not in out.output  # no prompt was offered, no turn ran


@pytest.mark.usefixtures("prefect_server")
def test_attach_in_the_chat_gives_the_next_message_a_file(workspace: Path) -> None:
    (workspace / "rota.txt").write_text(NOTE + "\n")
    model = Prompts("Every Friday.")
    with use_model(model.model):
        out = runner.invoke(app, ["chat", "--user", "priya", "--workspace", str(workspace)],
                            input="/attach rota.txt\nHow often do the disks rotate?\nAnd again?\n", terminal_width=300)
    assert out.exit_code == 0, out.output
    assert "attached to your next message: rota.txt" in out.output
    assert "generalist: Every Friday." in out.output
    asked = model.containing("How often do the disks rotate?")
    assert NOTE in asked[0], "the file went with the message after /attach"
    [again] = model.containing("And again?")
    assert NOTE not in again, "and with that message only"
