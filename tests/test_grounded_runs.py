"""Grounding by default in `plan_and_run` and `foreman run`: what the model is given, and what the
person gets back (the answer, its sources, the route taken).

One workspace and one Foreman home for the module, so the demo workspace is indexed once (about
20 s cold on 2 cores); each test checks that its run found the index up to date.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prefect.settings import PREFECT_API_URL
from typer.testing import CliRunner

from foreman.agents.models import use_model
from foreman.agents.scripted import ScriptedChatModel, ScriptedReply, Turn, succeed, succeed_model
from foreman.cli import app
from foreman.engine.grounding import ANSWER_RULE
from foreman.flows.planner import plan_and_run
from foreman.settings import reset_settings

DEMO = Path(__file__).resolve().parent.parent / "demo" / "workspace"
RECOMMENDATION = "Recommendation: move the log upload to 03:00"

pytestmark = pytest.mark.usefixtures("prefect_server", "shared_home")


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("grounded") / "home"
    before = os.environ.get("FOREMAN_HOME")
    os.environ["FOREMAN_HOME"] = str(home)
    reset_settings()
    yield home
    if before is not None:
        os.environ["FOREMAN_HOME"] = before
    reset_settings()


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("notebook") / "workspace"
    shutil.copytree(DEMO, target)
    return target


class Recorder:
    """A scripted model that keeps every prompt, answering by what the prompt asks for."""

    def __init__(self, plan_tasks: list[dict] | None = None) -> None:
        self.prompts: list[str] = []
        self.plan_tasks = plan_tasks or []
        self.lock = threading.Lock()
        self.model = ScriptedChatModel(responder=self.respond)

    def respond(self, turn: Turn) -> ScriptedReply:
        text = "\n".join(str(m.content) for m in turn.messages)
        with self.lock:
            self.prompts.append(text)
        if "a plan for this objective" in text:
            return succeed_model(rationale="count the rows", tasks=self.plan_tasks)
        if "Answer the objective" in text:
            return succeed("Six hosts are in the basement rack (inventory/hosts.csv).")
        if "Question:" in text:  # the fast path's one call
            return ScriptedReply(content="Move the log upload to 03:00 and cap transcoding at 2 threads [1].")
        return succeed("6 rows say basement rack")

    def containing(self, phrase: str) -> list[str]:
        return [p for p in self.prompts if phrase in p]


def test_a_question_the_notes_answer_takes_one_grounded_call_and_cites_its_source(notebook: Path) -> None:
    model = Recorder()
    with use_model(model.model):
        state = plan_and_run("What does the Q3 report recommend?", workspace=str(notebook), return_state=True)
    result = state.result()

    assert len(model.prompts) == 1, "one model call: no planner, no sub-task agents"
    assert RECOMMENDATION in model.prompts[0], "the passage that answers it reached the model"
    assert result.answer.startswith("Move the log upload to 03:00")
    assert any(s.startswith("report.txt:") for s in result.sources)
    assert "question" in (result.route or "")
    assert [t.id for t in result.plan.tasks] == ["answer"] and result.statuses == {"answer": "COMPLETED"}
    assert result.llm_calls == 1

    run_id = str(state.state_details.flow_run_id)
    body = {"artifacts": {"flow_run_id": {"any_": [run_id]}}, "limit": 50, "offset": 0}
    rows = httpx.post(f"{PREFECT_API_URL.value()}/artifacts/filter", json=body, timeout=30).json()
    answer = next(r for r in rows if r.get("key") == "answer")["data"]
    assert "Move the log upload to 03:00" in answer and "report.txt:" in answer, answer


def test_an_action_is_planned_and_every_model_call_gets_the_passages(notebook: Path) -> None:
    step = {"id": "draft", "title": "Draft the move", "agent": "generalist",
            "instructions": "Draft the steps to move Jellyfin from media01 to pve2."}
    model = Recorder([step])
    with use_model(model.model):
        result = plan_and_run("Draft the steps to move Jellyfin from media01 to pve2.", workspace=str(notebook))

    assert "action" in (result.route or "")
    planner = model.containing("a plan for this objective")
    assert planner and "Passages from the knowledge base" in planner[0], "the planner saw what grounding found"
    sub_task = model.containing("Draft the steps to move Jellyfin")
    assert any(ANSWER_RULE in p for p in sub_task), "the step was given its passages and the rule"
    assert model.containing("Answer the objective")


def test_a_count_over_a_table_is_one_checked_query_and_the_rows_are_its_evidence(notebook: Path) -> None:
    prompts: list[str] = []

    def respond(turn: Turn) -> ScriptedReply:
        prompts.append("\n".join(str(m.content) for m in turn.messages))
        return ScriptedReply(content="```sql\nSELECT COUNT(*) FROM hosts WHERE location ILIKE '%basement rack%'\n```")

    with use_model(ScriptedChatModel(responder=respond)):
        result = plan_and_run("How many hosts in the inventory are in the basement rack?", workspace=str(notebook))

    assert len(prompts) == 1, "one model call writes the query; Python runs and renders it"
    assert "CREATE TABLE hosts" in prompts[0] and "CREATE TABLE vlans" not in prompts[0], "only the matching table"
    assert result.answer.startswith("6\n") and "SELECT" in result.answer
    assert "inventory/hosts.csv:12" in result.sources, "the switch row (an unquoted comma in it) counts too"
    assert all(s.startswith("inventory/hosts.csv:") for s in result.sources)
    assert (result.route or "").startswith("query") and result.llm_calls == 1


def test_without_grounding_nothing_is_searched_and_the_planner_plans(notebook: Path) -> None:
    step = {"id": "look", "title": "Look", "instructions": "Read the report.", "agent": "generalist"}
    model = Recorder([step])
    with use_model(model.model):
        result = plan_and_run("What does the Q3 report recommend?", workspace=str(notebook), ground=False)
    assert model.containing("a plan for this objective"), "no fast path without grounding"
    assert not model.containing(RECOMMENDATION), "no passages were handed to any call"
    assert result.sources == [] and result.route is None


def test_foreman_run_prints_the_answer_with_its_sources(notebook: Path) -> None:
    with use_model(Recorder().model):
        out = CliRunner().invoke(app, ["run", "What does the Q3 report recommend?", "--workspace", str(notebook)],
                                 terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "answer: Move the log upload to 03:00" in out.output
    assert "sources: report.txt:" in out.output


def test_a_plan_that_never_writes_the_file_the_objective_names_ends_failed(notebook: Path) -> None:
    from foreman.errors import RunFailed

    step = {"id": "summarise", "title": "Summarise", "agent": "generalist",
            "instructions": "Summarise the Q3 report in three lines."}
    with use_model(Recorder([step]).model):
        with pytest.raises(RunFailed) as failed:
            plan_and_run("Write the Q3 report's summary to q3-summary.md", workspace=str(notebook), allow_write=True)
    result = failed.value.result
    assert result.status == "FAILED" and "q3-summary.md" in (result.stopped_by or "")
    assert result.statuses == {"summarise": "COMPLETED"}, "the finished step is kept"
