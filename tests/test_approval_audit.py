"""What the audit says about an approval point: a resume without an answer is nobody's decision,
and every typed field is clipped.

Prefect is replaced by stand-ins that behave as its `pause_flow_run` does on resume: the form
class is built from the stored response, or with only its defaults when there is none.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from foreman.engine.plan import SubTask
from foreman.flows import approval
from foreman.tools.audit import MAX_TEXT, NO_ANSWER, AuditLog, Decision

STEP = SubTask(id="delete", title="Delete old logs", instructions="Delete them.", agent="generalist", approval=True,
               on_reject="fail", ask="How many days to keep?")


@pytest.fixture()
def resume_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Call with the run input a resume carries (None: no input); returns (answer, the audited decision)."""
    run = SimpleNamespace(flow_run=SimpleNamespace(id="0000-run", name="calm-otter"), flow=SimpleNamespace(name="f"))
    monkeypatch.setattr(approval, "FlowRunContext", SimpleNamespace(get=lambda: run))
    monkeypatch.setattr(approval, "create_markdown_artifact", lambda **_: None)
    monkeypatch.setattr(approval, "notify", lambda *_: None)
    audit = AuditLog(tmp_path / "audit.sqlite3")

    def resume(run_input: dict[str, Any] | None) -> tuple[Any, Decision]:
        def pause_flow_run(wait_for_input, **_):  # as Prefect's RunInput.load after the resume
            return wait_for_input(**run_input) if run_input else wait_for_input()

        monkeypatch.setattr(approval, "pause_flow_run", pause_flow_run)
        answer = approval.PrefectApprover(audit, timeout_s=5, poll_s=1)(STEP, {})
        [decision] = audit.decisions()[-1:]
        return answer, decision

    return resume


def test_a_resume_without_input_is_audited_as_no_answer_not_as_a_rejection(resume_with) -> None:
    answer, decision = resume_with(None)
    assert not answer.approved  # the step does not run: its on_reject rule applies
    assert decision.decision == NO_ANSWER == "resumed without an answer"
    assert decision.decided_by is None and not decision.timed_out
    assert "nobody answered" in decision.comment and "on_reject: fail" in decision.comment


def test_an_input_without_a_decision_is_no_answer_either(resume_with) -> None:
    answer, decision = resume_with({"comment": "looked at it", "decided_by": "kim"})
    assert not answer.approved
    assert (decision.decision, decision.decided_by) == (NO_ANSWER, "kim")
    assert decision.comment.endswith("comment: looked at it")


def test_a_form_with_a_decision_is_audited_as_that_decision(resume_with) -> None:
    _, rejected = resume_with({"decision": "reject", "comment": "not today", "decided_by": ""})
    assert (rejected.decision, rejected.decided_by, rejected.comment) == ("rejected", None, "not today")
    answer, approved = resume_with({"decision": "approve", "decided_by": "sam", "value": "v2"})
    assert answer.approved and (approved.decision, approved.decided_by, approved.value) == ("approved", "sam", "v2")


def test_value_comment_and_name_are_clipped_alike(resume_with) -> None:
    huge = "x" * 1_000_000
    _, decision = resume_with({"decision": "approve", "comment": huge, "value": huge, "decided_by": huge})
    for text in (decision.value, decision.comment, decision.decided_by):
        assert len(text) < MAX_TEXT + 40 and text.endswith(f"… [{1_000_000 - MAX_TEXT} chars cut]")
