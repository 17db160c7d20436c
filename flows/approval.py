"""Human approval points: pause the flow run and let a person decide in the Prefect UI.

The pause shows a form (approve, comment) whose description carries the facts: what
the step will do and what earlier steps found. A timeout decides the configured
default (reject unless told otherwise). Every decision is kept in the audit log.

A resume that carries no answer (the run resumed from the UI's state menu or the API
without the form) is not a person's rejection: the step does not run (its on_reject rule
applies) and the audit says "resumed without an answer", decided by nobody.

Who decided is only what was typed into `decided_by`: Prefect's form and API do not
authenticate anyone, so anyone who can reach the Prefect API can answer under any name.
Protect the API (see the README) if that matters.
"""

from __future__ import annotations

import foreman  # noqa: F401  (offline env first: Prefect may load this file by path)

# isort: split

import json
import logging
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout, MissingContextError
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from foreman.engine.executor import ApprovalAnswer
from foreman.engine.plan import SubTask
from foreman.inbox import PAUSE_PREFIX
from foreman.notifications import RunEvent, notify, run_url
from foreman.settings import get_settings
from foreman.tools.audit import NO_ANSWER, AuditLog, Decision, current_context


class ApprovalInput(RunInput):
    """The form a person fills in the Prefect UI to resume the run.

    `decided_by` is typed, not authenticated: it records who said they decided."""

    approve: bool = False
    comment: str = ""
    decided_by: str = Field(default="", description="Your name, for the audit trail.")
    value: str = Field(default="", description="Your answer, when the step asks a question.")


def approval_request(sub: SubTask, inputs: dict[str, Any]) -> str:
    """What the person sees: the step, what it will do, and what earlier steps found.

    `inputs` are all upstream results; the step's own inputs (direct dependencies) are marked."""
    found = "\n".join(f"- **{k}**{' (input of this step)' if k in sub.depends_on else ''}: "
                      f"{json.dumps(v, default=str)[:500]}" for k, v in inputs.items()) or "- (nothing)"
    question = f"**It asks you:** {sub.ask} (answer in *value*)\n\n" if sub.ask else ""
    rejecting = {"skip": "the step and everything after it are skipped",
                 "fail": "the step fails", "replan": "the planner looks for another way"}[sub.on_reject]
    return (
        f"### Approve step `{sub.id}`: {sub.title}?\n\n"
        f"{question}"
        f"If you reject it, {rejecting}; with no answer in time the default is **{sub.approval_default}**.\n\n"
        f"**What it will do:** {sub.instructions}\n\n"
        f"{_who(sub)}\n\n"
        f"**What earlier steps found:**\n{found}\n"
    )


def _who(sub: SubTask) -> str:
    if sub.script is not None:
        return f"**Script:** `{' '.join([sub.script.path, *sub.script.args])}`" + (f" in `{sub.script.cwd}`" if sub.script.cwd else "")
    return f"**Agent:** {sub.agent or 'capability ' + str(sub.capability)}; **tools:** {', '.join(sub.tools) or 'none'}"


def pause_key(step_id: str) -> str:
    """Prefect run-input keys allow only lowercase letters, digits and dashes; step ids may have '_'."""
    return PAUSE_PREFIX + step_id.replace("_", "-")


def _resume_after_timeout() -> None:
    """Prefect leaves the run PAUSED when nobody answered; the run goes on with the default."""
    from prefect import get_client
    from prefect.states import Running

    flow_run = FlowRunContext.get().flow_run
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.id, Running(message="approval timed out; default applied"), force=True)


class PrefectApprover:
    """The engine's approver: pause, wait for the form, record the decision, tell whoever must know."""

    def __init__(self, audit: AuditLog, timeout_s: int = 3600, poll_s: int | None = None) -> None:
        self.audit = audit
        self.timeout_s = timeout_s
        self.poll_s = poll_s or get_settings().approval_poll_s

    def __call__(self, sub: SubTask, inputs: dict[str, Any]) -> ApprovalAnswer:
        request = approval_request(sub, inputs)
        create_markdown_artifact(key=f"approval-{sub.id}".replace("_", "-"), markdown=request,
                                 description=f"Waiting for approval of {sub.id}")
        flow_run = FlowRunContext.get().flow_run
        notify(RunEvent(kind="awaiting_approval", flow=FlowRunContext.get().flow.name, run_name=flow_run.name,
                        run_id=str(flow_run.id), url=run_url(str(flow_run.id)),
                        message=f"Step {sub.id} ({sub.title}) waits for your decision "
                                f"(Prefect UI: the paused run -> Resume). Default in {self.timeout_s}s: "
                                f"{sub.approval_default}."))
        try:
            form = pause_flow_run(
                wait_for_input=ApprovalInput.with_initial_data(description=request, approve=False),
                timeout=self.timeout_s, poll_interval=self.poll_s, key=pause_key(sub.id),
            )
        except FlowPauseTimeout:
            _resume_after_timeout()
            approved = sub.approval_default == "approve"
            answer = ApprovalAnswer(approved=approved, timed_out=True,
                                    comment=f"no decision within {self.timeout_s}s; default: {sub.approval_default}")
            return record_decision(self.audit, sub, answer)
        answer, answered = answer_from_form(form, sub)
        return record_decision(self.audit, sub, answer, answered=answered)


def answer_from_form(form: ApprovalInput, sub: SubTask) -> tuple[ApprovalAnswer, bool]:
    """The answer the form carries, and whether it carries one at all.

    Prefect hands back a form with only its defaults when the run was resumed without input,
    so `approve` missing from the fields set means nobody decided: not approved (a resume
    must not approve by accident), but not a person's rejection either."""
    if "approve" in form.model_fields_set:
        return ApprovalAnswer(approved=form.approve, comment=form.comment, value=form.value,
                              decided_by=form.decided_by or None), True
    note = f"{NO_ANSWER}: nobody answered the approval form; treated as a rejection (on_reject: {sub.on_reject})"
    comment = f"{note}; comment: {form.comment}" if form.comment else note
    answer = ApprovalAnswer(approved=False, comment=comment, value=form.value, decided_by=form.decided_by or None,
                            answered=False)
    return answer, False


def record_decision(audit: AuditLog, sub: SubTask, answer: ApprovalAnswer, *,
                    answered: bool = True) -> ApprovalAnswer:
    """Keep the decision in the audit trail and the run's log; `answered=False` when nobody decided."""
    decision = NO_ANSWER if not answered else "approved" if answer.approved else "rejected"
    audit.record_decision(Decision(
        **current_context().model_dump(exclude={"task_id", "task_name", "agent"}),
        step=sub.id, decision=decision, decided_by=answer.decided_by, comment=answer.comment,
        timed_out=answer.timed_out, value=answer.value or None,
    ))
    _logger().info("step %s %s%s", sub.id, decision, f": {answer.comment}" if answer.comment else "")
    return answer


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The run's logger, or this module's outside a run (a script or test recording a decision)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


class TerminalApprover:
    """Ask the person at the terminal instead of pausing for the UI.

    For `foreman workflow run` / `foreman run` on the temporary Prefect server, whose UI nobody
    can open. With no answer (stdin closed) the step's default applies, as on a timeout.
    """

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def __call__(self, sub: SubTask, inputs: dict[str, Any]) -> ApprovalAnswer:
        import getpass

        import typer
        from rich.console import Console
        from rich.markdown import Markdown

        Console(stderr=True).print(Markdown(approval_request(sub, inputs)))
        try:
            approved = typer.confirm("Approve?", default=sub.approval_default == "approve", err=True)
            comment = typer.prompt("Comment", default="", show_default=False, err=True)
            value = typer.prompt(sub.ask, default="", show_default=False, err=True) if sub.ask else ""
        except (EOFError, typer.Abort):
            answer = ApprovalAnswer(approved=sub.approval_default == "approve", timed_out=True,
                                    comment=f"no answer on the terminal; default: {sub.approval_default}")
        else:
            answer = ApprovalAnswer(approved=approved, comment=comment, value=value, decided_by=getpass.getuser())
        return record_decision(self.audit, sub, answer)


def approver_for(approve_in: str, audit: AuditLog, timeout_s: int) -> PrefectApprover | TerminalApprover:
    """Where a run's approval points ask: the Prefect UI (pause for the form) or this terminal."""
    return TerminalApprover(audit) if approve_in == "terminal" else PrefectApprover(audit, timeout_s=timeout_s)
