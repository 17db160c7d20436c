"""Human approval points: pause the flow run and let a person decide in the Prefect UI.

The pause shows a form (approve, comment) whose description carries the facts: what
the step will do and what earlier steps found. A timeout decides the configured
default (reject unless told otherwise). Every decision is kept in the audit log.
"""

from __future__ import annotations

import foreman  # noqa: F401,I001  (offline env first: Prefect may load this file by path)

import json
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from foreman.engine.plan import SubTask
from foreman.tools.audit import AuditLog, Decision, current_context


class ApprovalInput(RunInput):
    """The form a person fills in the Prefect UI to resume the run."""

    approve: bool = False
    comment: str = ""
    decided_by: str = ""


def approval_request(sub: SubTask, inputs: dict[str, Any]) -> str:
    """What the person sees: the step, what it will do, and what it will work from."""
    found = "\n".join(f"- **{k}**: {json.dumps(v, default=str)[:500]}" for k, v in inputs.items()) or "- (nothing)"
    return (
        f"### Approve step `{sub.id}`: {sub.title}?\n\n"
        f"**What it will do:** {sub.instructions}\n\n"
        f"**Agent:** {sub.agent or 'capability ' + str(sub.capability)}; **tools:** {', '.join(sub.tools) or 'none'}\n\n"
        f"**What earlier steps found:**\n{found}\n"
    )


def _resume_after_timeout() -> None:
    """Prefect leaves the run PAUSED when nobody answered; the run goes on with the default."""
    from prefect import get_client
    from prefect.context import FlowRunContext
    from prefect.states import Running

    flow_run = FlowRunContext.get().flow_run
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.id, Running(message="approval timed out; default applied"), force=True)


class PrefectApprover:
    """The engine's approver: pause, wait for the form, record the decision."""

    def __init__(self, audit: AuditLog, timeout_s: int = 3600, default_approve: bool = False) -> None:
        self.audit = audit
        self.timeout_s = timeout_s
        self.default_approve = default_approve

    def __call__(self, sub: SubTask, inputs: dict[str, Any]) -> tuple[bool, str]:
        log = get_run_logger()
        request = approval_request(sub, inputs)
        create_markdown_artifact(key=f"approval-{sub.id}".replace("_", "-"), markdown=request,
                                 description=f"Waiting for approval of {sub.id}")
        log.warning("waiting for a person to approve step %s (Prefect UI: the paused run -> Resume)", sub.id)
        timed_out = False
        try:
            answer = pause_flow_run(
                wait_for_input=ApprovalInput.with_initial_data(description=request, approve=False),
                timeout=self.timeout_s,
                key=f"approve-{sub.id}",
            )
            approved, comment, who = answer.approve, answer.comment, answer.decided_by or None
        except FlowPauseTimeout:
            _resume_after_timeout()
            timed_out = True
            approved, who = self.default_approve, None
            comment = f"no decision within {self.timeout_s}s; default: {'approve' if approved else 'reject'}"
        self.audit.record_decision(Decision(
            **current_context().model_dump(exclude={"task_id", "task_name", "agent"}),
            step=sub.id, decision="approved" if approved else "rejected",
            decided_by=who, comment=comment, timed_out=timed_out,
        ))
        log.info("step %s %s%s", sub.id, "approved" if approved else "rejected", f": {comment}" if comment else "")
        return approved, comment
