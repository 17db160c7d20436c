"""What a person reads before deciding: the step, what it will do, and what earlier steps found.

Results are shown whole. One too long for a form is shown up to `PREVIEW_CHARS` with the
cut said in words (how much more, and where the full text is: a linked artifact), never
dropped silently; the approver must be able to read what they approve.
"""

from __future__ import annotations

import json
import re
from typing import Any

from foreman.engine.plan import SubTask

PREVIEW_CHARS = 3_000  # per result, in the form; the full text goes to an artifact
INLINE_CHARS = 200  # a short one-line string stays on the bullet's line

REJECTING = {"skip": "the step (and everything after it) is skipped and shown as REJECTED",
             "fail": "the step fails", "replan": "the planner looks for another way"}


def result_text(value: Any) -> str:
    """A result as a person reads it: text as text, anything else as indented JSON."""
    return value if isinstance(value, str) else json.dumps(value, indent=2, default=str)


def is_long(value: Any) -> bool:
    return len(result_text(value)) > PREVIEW_CHARS


def _fenced(text: str) -> str:
    """A code block whose fence no backtick run inside the text can close."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def _one(step_id: str, value: Any, *, is_input: bool, full_at: str | None, limit: int | None) -> str:
    head = f"- **{step_id}**{' (input of this step)' if is_input else ''}:"
    text = result_text(value)
    if isinstance(value, str) and "\n" not in value and len(value) <= INLINE_CHARS:
        return f"{head} {json.dumps(value)}"
    if limit is None or len(text) <= limit:
        return f"{head}\n\n{_fenced(text)}\n"
    where = f"[the full result]({full_at})" if full_at else "the full result in this run's artifacts"
    cut = (f"*… shown up to {limit:,} of {len(text):,} characters; "
           f"{len(text) - limit:,} more in {where} (artifact `{result_key(step_id)}`).*")
    return f"{head}\n\n{_fenced(text[:limit])}\n\n{cut}\n"


def result_key(step_id: str) -> str:
    """The artifact key holding a step's full result (Prefect keys: lowercase, digits, dashes)."""
    return f"result-{step_id}".replace("_", "-").lower()


def approval_request(sub: SubTask, inputs: dict[str, Any], full_at: dict[str, str] | None = None, *,
                     limit: int | None = PREVIEW_CHARS) -> str:
    """The markdown above the form (and in `foreman approvals`).

    `inputs` are the results of the step's approval context, the step's own inputs (direct
    dependencies) marked; `full_at` links each long result to its full text. `limit=None`
    shows every result whole (a terminal scrolls; a form in a dialog does not)."""
    found = "\n".join(_one(k, v, is_input=k in sub.depends_on, full_at=(full_at or {}).get(k), limit=limit)
                      for k, v in inputs.items()) or "- (nothing)"
    question = f"**It asks you:** {sub.ask} (answer in *Your answer*)\n\n" if sub.ask else ""
    return (
        f"### Approve step `{sub.id}`: {sub.title}?\n\n"
        f"Choose **approve** or **reject** under *Decision* (nothing is preselected).\n\n"
        f"{question}"
        f"If you reject it, {REJECTING[sub.on_reject]}; with no answer in time the default is "
        f"**{sub.approval_default}**.\n\n"
        f"**What it will do:** {sub.instructions}\n\n"
        f"{_who(sub)}\n\n"
        f"**What earlier steps found:**\n{found}\n"
    )


def _who(sub: SubTask) -> str:
    if sub.script is not None:
        command = " ".join([sub.script.path, *sub.script.args])
        return f"**Script:** `{command}`" + (f" in `{sub.script.cwd}`" if sub.script.cwd else "")
    return f"**Agent:** {sub.agent or 'capability ' + str(sub.capability)}; **tools:** {', '.join(sub.tools) or 'none'}"
