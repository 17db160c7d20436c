"""The Resume form a person fills at an approval point, and what its answer means.

The decision is a required choice with no default: a form that starts on "reject" (as a
switch that starts off does) turns "ok, ship it" + Submit into a rejection. Prefect's
server validates a resume against the stored JSON schema, so a resume that names no
decision is refused there with "'decision' is a required property", from the UI, the API
and `foreman approve` alike.

In Python the field may still be missing: a run resumed from the UI's state menu (not the
form) comes back with no input at all. That is nobody's decision, audited as such.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect.input import RunInput
from pydantic import ConfigDict, Field, create_model

from foreman.engine.plan import SubTask
from foreman.engine.records import ApprovalAnswer
from foreman.tools.audit import NO_ANSWER

Choice = Literal["approve", "reject"]
DECISION_HELP = "approve: the step runs now. reject: the step does not run, and its on_reject rule applies."


def _decision_required(schema: dict[str, Any]) -> None:
    """In the schema the UI renders and the server checks: a required choice, nothing preselected."""
    decision = schema["properties"]["decision"]
    decision.pop("default", None)
    choices = next((o for o in decision.pop("anyOf", []) if o.get("enum")), None)
    if choices:
        decision.update(choices)
    schema["required"] = ["decision", *[r for r in schema.get("required", []) if r != "decision"]]


class ApprovalInput(RunInput):
    """What a person answers. `decided_by` is typed, not authenticated: who said they decided."""

    model_config = ConfigDict(json_schema_extra=_decision_required)

    decision: Choice | None = Field(default=None, title="Decision", description=DECISION_HELP)
    comment: str = Field(default="", title="Comment", description="Why; kept in the audit log.")
    decided_by: str = Field(default="", title="Your name", description="For the audit trail.")


class ApprovalWithAnswer(ApprovalInput):
    """The form of a step that asks a question: the typed answer reaches the step."""

    value: str = Field(default="", title="Your answer", description="The answer the step asks for.")


def approval_form(sub: SubTask, description: str) -> type[ApprovalInput]:
    """The form for `sub`, with the context above it; the question, when the step asks one."""
    if not sub.ask:
        return ApprovalInput.with_initial_data(description=description)
    form = create_model(  # the question as the field's label, so the person sees what to type
        "ApprovalWithAnswer", __base__=ApprovalWithAnswer,
        value=(str, Field(default="", title="Your answer", description=sub.ask)),
    )
    return form.with_initial_data(description=description)


def answer_from_form(form: ApprovalInput, sub: SubTask) -> tuple[ApprovalAnswer, bool]:
    """The answer the form carries, and whether it carries a decision at all.

    No decision (a resume with no input): not approved (a resume must not approve by
    accident), but not a person's rejection either."""
    value = getattr(form, "value", "")
    if form.decision is not None:
        return ApprovalAnswer(approved=form.decision == "approve", comment=form.comment, value=value,
                              decided_by=form.decided_by or None), True
    note = f"{NO_ANSWER}: nobody answered the approval form; treated as a rejection (on_reject: {sub.on_reject})"
    comment = f"{note}; comment: {form.comment}" if form.comment else note
    answer = ApprovalAnswer(approved=False, comment=comment, value=value, decided_by=form.decided_by or None,
                            answered=False)
    return answer, False
