"""The shipped example workflows run as a user would run them, with a scripted model and a person."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from prefect.flow_runs import resume_flow_run

from foreman.agents.models import use_model
from foreman.agents.scripted import (
    ScriptedChatModel,
    ScriptedReply,
    Turn,
    call,
    succeed,
    succeed_model,
)
from foreman.flows.workflow import run_workflow
from foreman.tools.audit import audit_log

pytestmark = pytest.mark.usefixtures("prefect_server", "foreman_home")

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
DRAFT = "Backups you can trust\n\nNightly restic runs at 02:30.\n\nRestores are tested monthly.\n\nAlerts catch misses."


def by_step(replies: dict[str, list[ScriptedReply]]) -> ScriptedChatModel:
    """Replies per step, in turn order; the step is recognised by its title in the prompt."""
    turns: dict[str, int] = {}

    def respond(turn: Turn) -> ScriptedReply:
        text = "\n".join(str(m.content) for m in turn.messages)
        title = next(t for t in replies if t in text)
        n = turns[title] = turns.get(title, -1) + 1
        return replies[title][min(n, len(replies[title]) - 1)]

    return ScriptedChatModel(responder=respond)


def run_and_decide(path: Path, model: ScriptedChatModel, paused_run, decision: dict) -> tuple[object, str]:
    box: dict = {}

    def target() -> None:
        with use_model(model):
            box["state"] = run_workflow(path=str(path), return_state=True)

    thread = threading.Thread(target=target, daemon=True)  # a failed test must not hang the session
    thread.start()
    run_id = paused_run()
    resume_flow_run(run_id, run_input=decision)
    thread.join(timeout=300)
    return box["state"].result(), run_id


def test_content_pipeline_researches_writes_reviews_and_publishes_once_approved(tmp_path: Path, paused_run) -> None:
    folder = tmp_path / "content"
    shutil.copytree(WORKFLOWS / "content_pipeline", folder, ignore=shutil.ignore_patterns("published"))
    model = by_step({
        "Research the notes on backups": [call("read_file", path="backups.md"),
                                      succeed("restic nightly 02:30 (backups.md); monthly restore test (backups.md)")],
        "Write the article": [succeed(DRAFT)],
        "Review the draft": [succeed_model(ready=True, notes="all claims are in backups.md")],
    })
    result, run_id = run_and_decide(folder / "workflow.yaml", model, paused_run,
                                    {"decision": "approve", "comment": "looks right", "decided_by": "sam",
                                     "value": "Trustworthy backups"})

    assert result.statuses == {"research": "COMPLETED", "write": "COMPLETED", "review": "COMPLETED",
                               "publish": "COMPLETED"}
    [published] = (folder / "published").glob("*.md")
    assert published.name.endswith("-trustworthy-backups.md")  # the approver's typed answer
    assert published.read_text().startswith(DRAFT)
    reads = [r for r in audit_log().for_run(run_id) if r.tool == "read_file"]
    assert [(r.outcome, r.arguments["path"]) for r in reads] == [("ok", "backups.md")]  # docs/ is the workspace
    [decision] = audit_log().decisions(run_id)
    assert (decision.step, decision.decision, decision.decided_by, decision.value) == \
        ("publish", "approved", "sam", "Trustworthy backups")


def test_content_pipeline_does_not_ask_anyone_when_the_review_says_not_ready(tmp_path: Path) -> None:
    folder = tmp_path / "content"
    shutil.copytree(WORKFLOWS / "content_pipeline", folder, ignore=shutil.ignore_patterns("published"))
    model = by_step({  # a run on another topic: the param reaches the agents' task
        "Research the notes on monitoring": [succeed("notes")],
        "Write the article": [succeed(DRAFT)],
        "Review the draft": [succeed_model(ready=False, notes="the 9-minute restore is not in the draft")],
    })
    with use_model(model):
        result = run_workflow(path=str(folder / "workflow.yaml"), params={"topic": "monitoring"})
    assert "read the ones about monitoring" in result.plan.task("research").instructions
    assert result.statuses["publish"] == "SKIPPED" and result.status == "COMPLETED"
    assert result.results["review"]["notes"].startswith("the 9-minute")
    assert not (folder / "published").exists()


def test_log_pipeline_summarizes_errors_redacts_and_archives_after_approval(tmp_path: Path, paused_run) -> None:
    folder = tmp_path / "logs"
    shutil.copytree(WORKFLOWS / "log_pipeline", folder, ignore=shutil.ignore_patterns("work", "archive"))
    model = by_step({"Summarize anomalies": [succeed("One upload failed at 03:02.")]})
    result, _ = run_and_decide(folder / "workflow.yaml", model, paused_run, {"decision": "approve"})

    assert result.statuses == {"collect": "COMPLETED", "redact": "COMPLETED", "summarize": "COMPLETED",
                               "upload": "COMPLETED"}
    assert result.results["redact"]["errors"] == 1
    archived = (folder / "archive" / "router.log").read_text()
    assert "abc123secret" not in archived and "192.168." not in archived and "token=[redacted]" in archived
