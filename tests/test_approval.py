"""Approval points pause the run for a person; decisions and timeouts are kept in the audit log."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from prefect.flow_runs import resume_flow_run

from foreman.agents.models import use_model
from foreman.agents.scripted import ScriptedChatModel, succeed
from foreman.engine.plan import Plan, SubTask
from foreman.flows.planner import plan_and_run
from foreman.tools.audit import audit_log

pytestmark = pytest.mark.usefixtures("prefect_server", "foreman_home")

PLAN = Plan(objective="tidy up", tasks=[
    SubTask(id="look", title="STEP-LOOK", instructions="Look around.", agent="generalist"),
    SubTask(id="delete", title="STEP-DELETE", instructions="Delete old logs.", agent="generalist",
            depends_on=["look"], approval=True),
])


def model() -> ScriptedChatModel:
    def respond(turn):
        text = "\n".join(str(m.content) for m in turn.messages)
        return succeed("answer" if "Answer the objective" in text else "found 3 old logs")
    return ScriptedChatModel(responder=respond)


def run_in_background(**kwargs) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def target() -> None:
        with use_model(model()):
            box["state"] = plan_and_run(objective="tidy up", plan=PLAN, return_state=True, **kwargs)

    thread = threading.Thread(target=target, daemon=True)  # a failed test must not hang the session
    thread.start()
    return thread, box


def test_approval_pauses_until_a_person_approves_and_the_decision_is_audited(workspace: Path, paused_run) -> None:
    thread, box = run_in_background(workspace=str(workspace))
    run_id = paused_run()
    resume_flow_run(run_id, run_input={"approve": True, "comment": "old logs only", "decided_by": "sam"})
    thread.join(timeout=120)

    result = box["state"].result()
    assert result.statuses == {"look": "COMPLETED", "delete": "COMPLETED"}
    [decision] = audit_log().decisions(run_id)
    assert (decision.step, decision.decision, decision.decided_by, decision.comment) == ("delete", "approved", "sam", "old logs only")
    assert not decision.timed_out


def test_rejection_skips_the_step(workspace: Path, paused_run) -> None:
    thread, box = run_in_background(workspace=str(workspace))
    run_id = paused_run()
    resume_flow_run(run_id, run_input={"approve": False, "comment": "not today"})
    thread.join(timeout=120)
    result = box["state"].result()
    assert result.statuses["delete"] == "SKIPPED"
    assert audit_log().decisions(run_id)[0].decision == "rejected"


def test_a_resume_without_an_answer_is_audited_as_nobody_deciding(workspace: Path, paused_run) -> None:
    thread, box = run_in_background(workspace=str(workspace))
    run_id = paused_run()
    resume_flow_run(run_id)  # no run input: the API, or a resume that skips the form
    thread.join(timeout=120)
    result = box["state"].result()
    assert result.statuses["delete"] == "SKIPPED"  # not approved: the step's on_reject (skip) applies
    [decision] = audit_log().decisions(run_id)
    assert (decision.decision, decision.decided_by) == ("resumed without an answer", None)
    assert "nobody answered" in decision.comment


def test_no_decision_before_the_timeout_rejects_by_default(workspace: Path) -> None:
    thread, box = run_in_background(workspace=str(workspace), approval_timeout_s=2)
    thread.join(timeout=180)
    result = box["state"].result()
    assert result.statuses["delete"] == "SKIPPED"
    [decision] = audit_log().decisions(result.run_key)
    assert decision.timed_out and decision.decision == "rejected"


def test_decisions_are_listed_per_run_and_across_runs(foreman_home) -> None:
    from typer.testing import CliRunner

    from foreman.cli import app
    from foreman.tools.audit import Decision

    audit_log().record_decision(Decision(run_id="11111111-aaaa", run_name="calm-otter", step="delete",
                                         decision="approved", decided_by="sam", comment="fine"))
    runner = CliRunner()
    one = runner.invoke(app, ["audit", "calm-otter"], terminal_width=200)
    assert one.exit_code == 0 and "approved" in one.output and "sam" in one.output
    every = runner.invoke(app, ["decisions"], terminal_width=200)
    assert "calm-otter" in every.output and "delete" in every.output


def test_a_person_on_a_terminal_lists_what_waits_and_answers_it(workspace: Path, paused_run) -> None:
    from typer.testing import CliRunner

    from foreman.cli import app

    runner = CliRunner()
    thread, box = run_in_background(workspace=str(workspace))
    run_id = paused_run()

    listed = runner.invoke(app, ["approvals"], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    assert run_id in listed.output and "step delete" in listed.output
    assert "Delete old logs." in listed.output and "found 3 old logs" in listed.output  # the form's context

    unknown = runner.invoke(app, ["approve", "not-a-run"], terminal_width=200)
    assert unknown.exit_code == 1 and "no flow run 'not-a-run'" in unknown.output
    answered = runner.invoke(app, ["approve", run_id, "--reject", "--comment", "keep them", "--by", "kim"],
                             terminal_width=200)
    assert answered.exit_code == 0, answered.output
    assert "rejected step delete" in answered.output
    thread.join(timeout=120)

    assert box["state"].result().statuses["delete"] == "SKIPPED"
    [decision] = audit_log().decisions(run_id)
    assert (decision.decision, decision.decided_by, decision.comment) == ("rejected", "kim", "keep them")
    again = runner.invoke(app, ["approve", run_id], terminal_width=200)
    assert again.exit_code == 1 and "is COMPLETED, not waiting for an approval" in " ".join(again.output.split())
