"""Approval points pause the run for a person, who must choose approve or reject; every decision is
audited, echoed in the run's log and a "decision" artifact, and a rejection is said in the run's state."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from prefect import get_client
from prefect.flow_runs import resume_flow_run
from prefect.states import Running

from foreman.agents.models import use_model
from foreman.agents.scripted import ScriptedChatModel, succeed
from foreman.engine.executor import approval_context
from foreman.engine.plan import Plan, ScriptStep, SubTask
from foreman.flows.approval_context import PREVIEW_CHARS, approval_request
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


def run_in_background(plan: Plan = PLAN, **kwargs) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def target() -> None:
        with use_model(model()):
            box["state"] = plan_and_run(objective="tidy up", plan=plan, ground=False, return_state=True, **kwargs)

    thread = threading.Thread(target=target, daemon=True)  # a failed test must not hang the session
    thread.start()
    return thread, box


def artifacts(run_id: str) -> dict[str, object]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    return {a.key: a for a in found if a.key}


def eventually(read, holds, timeout_s: float = 20):
    """Prefect sends logs and task-run states in the background: read until `holds`, or give the last read."""
    import time

    deadline = time.time() + timeout_s
    while True:
        value = read()
        if holds(value) or time.time() > deadline:
            return value
        time.sleep(0.5)


def run_logs(run_id: str) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        return [entry.message for entry in client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[run_id])), limit=200)]


def task_run_states(run_id: str) -> dict[str, str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return {t.name: t.state.name for t in runs if t.state}


def test_approval_pauses_until_a_person_approves_and_the_decision_is_audited(workspace: Path, paused_run) -> None:
    thread, box = run_in_background(workspace=str(workspace))
    run_id = paused_run()
    resume_flow_run(run_id, run_input={"decision": "approve", "comment": "old logs only", "decided_by": "sam"})
    thread.join(timeout=120)

    result = box["state"].result()
    assert result.statuses == {"look": "COMPLETED", "delete": "COMPLETED"}
    [decision] = audit_log().decisions(run_id)
    assert (decision.step, decision.decision, decision.decided_by, decision.comment) == ("delete", "approved", "sam", "old logs only")
    assert not decision.timed_out


def test_the_form_has_a_required_decision_with_nothing_preselected(workspace: Path, paused_run) -> None:
    thread, box = run_in_background(workspace=str(workspace))
    run_id = paused_run()
    with get_client(sync_client=True) as client:
        schema = json.loads(client.read_flow_run_input(run_id, "paused-approve-delete-schema"))
    decision = schema["properties"]["decision"]
    assert schema["required"] == ["decision"] and "default" not in decision
    assert decision["enum"] == ["approve", "reject"]
    assert "value" not in schema["properties"]  # this step asks nothing
    for no_decision in (None, {"comment": "ok, ship it"}, {"approve": True}):  # the old form's field is refused too
        with pytest.raises(RuntimeError, match="decision|approve"):
            resume_flow_run(run_id, run_input=no_decision)
    resume_flow_run(run_id, run_input={"decision": "approve"})
    thread.join(timeout=120)
    assert box["state"].result().statuses["delete"] == "COMPLETED"


def test_a_rejection_is_rejected_everywhere_the_person_looks(workspace: Path, paused_run) -> None:
    thread, box = run_in_background(workspace=str(workspace))
    run_id = paused_run()
    resume_flow_run(run_id, run_input={"decision": "reject", "comment": "ok, ship it", "decided_by": "sam"})
    thread.join(timeout=120)
    state = box["state"]
    result = state.result()
    assert result.statuses["delete"] == "REJECTED" and result.status == "COMPLETED"
    assert audit_log().decisions(run_id)[0].decision == "rejected"
    # the run's final state says so, in the UI's first line
    assert "step delete was REJECTED" in state.message and "ok, ship it" in state.message
    with get_client(sync_client=True) as client:
        assert "REJECTED" in client.read_flow_run(run_id).state.message
    found = artifacts(run_id)
    assert "**decision:** REJECTED" in found["decision-delete"].data and "sam" in found["decision-delete"].data
    summary = {row["sub-task"]: row["status"] for row in json.loads(found["summary"].data)}
    assert summary["delete"] == "REJECTED"
    assert "class delete rejected" in found["plan-final"].data  # the final graph colours it
    echo = 'step delete: REJECTED by sam ("ok, ship it")'
    assert any(echo in line for line in eventually(lambda: run_logs(run_id), lambda ls: any(echo in x for x in ls)))
    # the step is on the run's graph, as a task run named after it
    states = eventually(lambda: task_run_states(run_id), lambda s: s.get("delete: STEP-DELETE") == "Rejected")
    assert states.get("delete: STEP-DELETE") == "Rejected", states


def test_a_resume_without_an_answer_is_audited_as_nobody_deciding(workspace: Path, paused_run) -> None:
    thread, box = run_in_background(workspace=str(workspace))
    run_id = paused_run()
    with get_client(sync_client=True) as client:  # the UI's state menu: Running, past the form
        client.set_flow_run_state(run_id, Running(), force=True)
    thread.join(timeout=120)
    result = box["state"].result()
    assert result.statuses["delete"] == "REJECTED"  # not approved: the step's on_reject (skip) applies
    [decision] = audit_log().decisions(run_id)
    assert (decision.decision, decision.decided_by) == ("resumed without an answer", None)
    assert "nobody answered" in decision.comment


def test_no_decision_before_the_timeout_rejects_by_default(workspace: Path) -> None:
    thread, box = run_in_background(workspace=str(workspace), approval_timeout_s=2)
    thread.join(timeout=180)
    result = box["state"].result()
    assert result.statuses["delete"] == "REJECTED"
    [decision] = audit_log().decisions(result.run_key)
    assert decision.timed_out and decision.decision == "rejected"


def test_decisions_are_listed_per_run_and_across_runs(foreman_home) -> None:
    from typer.testing import CliRunner

    from foreman.cli import app
    from foreman.tools.audit import Decision

    audit_log().record_decision(Decision(run_id="11111111-aaaa", run_name="calm-otter", step="delete",
                                         decision="approved", decided_by="sam", comment="fine [a-z0-9]"))
    runner = CliRunner()
    one = runner.invoke(app, ["audit", "calm-otter"], terminal_width=200)
    assert one.exit_code == 0 and "approved" in one.output and "sam" in one.output
    assert "fine [a-z0-9]" in one.output  # a comment is text, not Rich markup
    every = runner.invoke(app, ["decisions"], terminal_width=200)
    assert "calm-otter" in every.output and "delete" in every.output


def test_a_person_on_a_terminal_lists_what_waits_and_answers_it_by_short_id_or_name(workspace: Path,
                                                                                      paused_run) -> None:
    from typer.testing import CliRunner

    from foreman.cli import app

    runner = CliRunner()
    asking = PLAN.model_copy(update={"tasks": [PLAN.tasks[0], PLAN.tasks[1].model_copy(
        update={"ask": "How many days to keep?"})]})
    thread, box = run_in_background(asking, workspace=str(workspace))
    run_id = paused_run()
    with get_client(sync_client=True) as client:
        run_name = client.read_flow_run(run_id).name

    listed = runner.invoke(app, ["approvals"], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    assert run_id in listed.output and "step delete" in listed.output
    assert "Delete old logs." in listed.output and "found 3 old logs" in listed.output  # the form's context

    unknown = runner.invoke(app, ["approve", "not-a-run"], terminal_width=200)
    assert unknown.exit_code == 1 and "no flow run 'not-a-run'" in unknown.output
    by_name = runner.invoke(app, ["approve", run_name, "--reject", "--comment", "keep them", "--by", "kim",
                                  "--value", "30"], terminal_width=200)
    assert by_name.exit_code == 0, by_name.output
    assert "rejected step delete" in by_name.output
    thread.join(timeout=120)

    assert box["state"].result().statuses["delete"] == "REJECTED"
    [decision] = audit_log().decisions(run_id)
    assert (decision.decision, decision.decided_by, decision.comment, decision.value) == \
        ("rejected", "kim", "keep them", "30")
    again = runner.invoke(app, ["approve", run_id[:8]], terminal_width=200)  # the short id, as `foreman audit`
    assert again.exit_code == 1 and "is COMPLETED, not waiting for an approval" in " ".join(again.output.split())


def test_an_approval_waits_for_every_step_its_context_names(tmp_path: Path, paused_run) -> None:
    """The log pipeline's shape: `upload` (after `redact`) is decided once `summarize` (also after
    `redact`) has finished, with the summary in front of the person."""
    from foreman.flows.workflow import run_workflow

    (tmp_path / "redact.py").write_text('import json\nprint(json.dumps({"errors": 2}))\n')
    (tmp_path / "summarize.py").write_text('import time\ntime.sleep(3)\nprint("SUMMARY: two disks are failing")\n')
    (tmp_path / "upload.py").write_text('print("uploaded")\n')
    (tmp_path / "workflow.yaml").write_text("""\
name: logs
steps:
  - {id: redact, script: redact.py}
  - {id: summarize, script: summarize.py, depends_on: [redact]}
  - {id: upload, script: upload.py, depends_on: [redact], approval: true}
""")
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(state=run_workflow(
        path=str(tmp_path / "workflow.yaml"), return_state=True)), daemon=True)
    thread.start()
    run_id = paused_run()
    with get_client(sync_client=True) as client:
        description = json.loads(client.read_flow_run_input(run_id, "paused-approve-upload-description"))
    assert "SUMMARY: two disks are failing" in description and '"errors": 2' in description
    resume_flow_run(run_id, run_input={"decision": "approve"})
    thread.join(timeout=120)
    assert box["state"].result().statuses == {"redact": "COMPLETED", "summarize": "COMPLETED", "upload": "COMPLETED"}


def step(step_id: str, *deps: str, approval: bool = False) -> SubTask:
    return SubTask(id=step_id, title=step_id, instructions="x", script=ScriptStep(path="x.py"),
                   depends_on=list(deps), approval=approval)


def test_the_approval_context_is_upstream_and_what_shares_its_inputs_never_a_later_approval() -> None:
    plan = Plan(tasks=[step("collect"), step("redact", "collect"), step("other"),
                       step("summarize", "redact"), step("upload", "redact", approval=True),
                       step("archive", "upload"), step("notify", "redact", approval=True)])
    assert approval_context(plan.task("upload"), plan) == ["collect", "redact", "summarize"]
    # a later approval point on the same inputs waits for the earlier one, never the other way round
    assert approval_context(plan.task("notify"), plan) == ["collect", "redact", "summarize", "upload", "archive"]


def test_long_results_are_previewed_with_the_cut_said_and_a_link_to_the_whole() -> None:
    sub = SubTask(id="upload", title="Upload", instructions="Upload it.", agent="generalist", depends_on=["logs"],
                  approval=True)
    long = "line of the log\n" * 1000
    text = approval_request(sub, {"logs": long, "short": "3 errors"}, {"logs": "http://ui/artifacts/artifact/1"})
    assert '**short**: "3 errors"' in text and long[:PREVIEW_CHARS] in text
    assert f"shown up to {PREVIEW_CHARS:,} of {len(long):,} characters" in text
    assert "[the full result](http://ui/artifacts/artifact/1)" in text and "result-logs" in text
