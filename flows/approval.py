"""Human approval points: pause the flow run and let a person decide in the Prefect UI.

The pause shows a form (`approval_form`: a required approve/reject choice, a comment, a
name) whose description carries the facts (`approval_context`): what the step will do and
what earlier steps found. A timeout decides the configured default (reject unless told
otherwise). Every decision is kept in the audit log, and echoed in the run's log and a
"decision" artifact.

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

import logging
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout, MissingContextError
from prefect.flow_runs import pause_flow_run

from foreman.engine.plan import SubTask
from foreman.engine.progress import Progress, publish
from foreman.engine.records import ApprovalAnswer
from foreman.flows.approval_context import (
    REJECTING,
    approval_request,
    is_long,
    result_key,
    result_text,
)
from foreman.flows.approval_form import ApprovalInput, answer_from_form, approval_form
from foreman.inbox import PAUSE_PREFIX
from foreman.notifications import RunEvent, notify
from foreman.prefect_ui import artifact_url, run_url
from foreman.settings import get_settings
from foreman.tools.audit import NO_ANSWER, AuditLog, Decision, current_context

log = logging.getLogger(__name__)


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


def _artifact(**kwargs: Any) -> Any:
    """An artifact on the run; explaining must never be why a decision is lost."""
    try:
        return create_markdown_artifact(**kwargs)
    except Exception as exc:  # noqa: BLE001
        _logger().warning("could not write artifact %s: %s", kwargs.get("key"), exc)
        return None


def full_results(inputs: dict[str, Any]) -> dict[str, str]:
    """One artifact per result too long for the form, holding its full text; returns their links."""
    links: dict[str, str] = {}
    for step_id, value in inputs.items():
        if is_long(value):
            artifact_id = _artifact(key=result_key(step_id), markdown=f"# Result of `{step_id}`\n\n"
                                    f"```\n{result_text(value)}\n```\n", description=f"Full result of {step_id}")
            links[step_id] = artifact_url(artifact_id) or ""
    return {k: v for k, v in links.items() if v}


class PrefectApprover:
    """The engine's approver: pause, wait for the form, record the decision, tell whoever must know."""

    def __init__(self, audit: AuditLog, timeout_s: int = 3600, poll_s: int | None = None) -> None:
        self.audit = audit
        self.timeout_s = timeout_s
        self.poll_s = poll_s or get_settings().approval_poll_s

    def __call__(self, sub: SubTask, inputs: dict[str, Any]) -> ApprovalAnswer:
        request = approval_request(sub, inputs, full_results(inputs))  # long results: preview + link
        _artifact(key=f"approval-{sub.id}".replace("_", "-"), markdown=request,
                  description=f"Waiting for approval of {sub.id}")
        context = FlowRunContext.get()
        flow_run = context.flow_run
        url = run_url(str(flow_run.id))
        notify(RunEvent(kind="awaiting_approval", flow=context.flow.name, run_name=flow_run.name,
                        run_id=str(flow_run.id), url=url,
                        message=f"Step {sub.id} ({sub.title}) waits for your decision "
                                f"(Prefect UI: the paused run -> Resume). Default in {self.timeout_s}s: "
                                f"{sub.approval_default}."))
        publish(Progress(phase="waiting", text=f"step {sub.id} waits for your decision"
                                                + (f" in the Prefect UI: {url}" if url else " in the Prefect UI")))
        try:
            form = pause_flow_run(wait_for_input=approval_form(sub, request), timeout=self.timeout_s,
                                  poll_interval=self.poll_s, key=pause_key(sub.id))
        except FlowPauseTimeout:
            _resume_after_timeout()
            approved = sub.approval_default == "approve"
            answer = ApprovalAnswer(approved=approved, timed_out=True,
                                    comment=f"no decision within {self.timeout_s}s; default: {sub.approval_default}")
            return record_decision(self.audit, sub, answer)
        answer, answered = answer_from_form(form, sub)
        return record_decision(self.audit, sub, answer, answered=answered)


def _what_next(sub: SubTask, answer: ApprovalAnswer) -> str:
    return "the step runs now" if answer.approved else REJECTING[sub.on_reject]


def decision_markdown(sub: SubTask, answer: ApprovalAnswer, decision: str) -> str:
    """The "decision" artifact: what was decided, by whom, and what happens because of it."""
    rows = [("decision", decision.upper() if decision in ("approved", "rejected") else decision),
            ("decided by", answer.decided_by or "nobody named"), ("comment", answer.comment or "-")]
    if sub.ask:
        rows.append(("answer to: " + sub.ask, answer.value or "-"))
    rows += [("timed out", "yes" if answer.timed_out else "no"), ("what happens", _what_next(sub, answer))]
    lines = "\n".join(f"- **{k}:** {str(v).replace(chr(10), ' ')}" for k, v in rows)
    return f"### Decision on step `{sub.id}`: {sub.title}\n\n{lines}\n"


def record_decision(audit: AuditLog, sub: SubTask, answer: ApprovalAnswer, *,
                    answered: bool = True) -> ApprovalAnswer:
    """Keep the decision in the audit trail, echo it in the run's log and a "decision" artifact.

    `answered=False` when nobody decided."""
    decision = NO_ANSWER if not answered else "approved" if answer.approved else "rejected"
    audit.record_decision(Decision(
        **current_context().model_dump(exclude={"task_id", "task_name", "agent"}),
        step=sub.id, decision=decision, decided_by=answer.decided_by, comment=answer.comment,
        timed_out=answer.timed_out, value=answer.value or None,
    ))
    said = decision.upper() if answered else decision
    by = f" by {answer.decided_by}" if answer.decided_by else ""
    comment = f' ("{answer.comment}")' if answer.comment else ""
    _logger().info("step %s: %s%s%s; %s", sub.id, said, by, comment, _what_next(sub, answer))
    _artifact(key=f"decision-{sub.id}".replace("_", "-"), markdown=decision_markdown(sub, answer, decision),
              description=f"Decision on {sub.id}: {decision}")
    return answer


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The run's logger, or this module's outside a run (a script or test recording a decision)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return log


class TerminalApprover:
    """Ask the person at the terminal instead of pausing for the UI.

    For `foreman workflow run` / `foreman run` on the temporary Prefect server, whose UI nobody
    can open. The decision is typed out (approve or reject; no default, as in the UI's form);
    with no answer (stdin closed) the step's default applies, as on a timeout.
    """

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def __call__(self, sub: SubTask, inputs: dict[str, Any]) -> ApprovalAnswer:
        import getpass

        import typer
        from rich.markdown import Markdown

        from foreman.terminal import SafeConsole

        publish(Progress(phase="asking", text=f"step {sub.id} waits for your decision here"))
        SafeConsole(stderr=True).print(Markdown(approval_request(sub, inputs, limit=None)))  # whole: it scrolls
        try:
            choice = typer.prompt("Decision (approve/reject)", value_proc=_decision, err=True)
            comment = typer.prompt("Comment", default="", show_default=False, err=True)
            value = typer.prompt(sub.ask, default="", show_default=False, err=True) if sub.ask else ""
        except (EOFError, typer.Abort):
            answer = ApprovalAnswer(approved=sub.approval_default == "approve", timed_out=True,
                                    comment=f"no answer on the terminal; default: {sub.approval_default}")
        else:
            answer = ApprovalAnswer(approved=choice, comment=comment, value=value,
                                    decided_by=getpass.getuser())
        return record_decision(self.audit, sub, answer)


TYPED = {"approve": True, "yes": True, "y": True, "reject": False, "no": False, "n": False}


def _decision(text: str) -> bool:
    """The typed decision; anything else is asked again (there is no default to fall back on)."""
    import typer

    decided = TYPED.get(text.strip().lower())
    if decided is None:
        raise typer.BadParameter("type approve or reject (or yes / no)")
    return decided


def approver_for(approve_in: str, audit: AuditLog, timeout_s: int) -> PrefectApprover | TerminalApprover:
    """Where a run's approval points ask: the Prefect UI (pause for the form) or this terminal."""
    return TerminalApprover(audit) if approve_in == "terminal" else PrefectApprover(audit, timeout_s=timeout_s)


__all__ = ["ApprovalInput", "PrefectApprover", "TerminalApprover", "answer_from_form", "approval_request",
           "approver_for", "pause_key", "record_decision"]
