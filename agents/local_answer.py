"""How a small model gives a task's result: under neutral tool names, and in words first.

Why (issue #11, measured with Qwen2.5-Coder-1.5B through the forcing proxy): every
yes/no task came back True. Two things in the forced call decided the answer, not the
model:

* **The completion tool's name.** The grammar made the model write
  `"name": "mark_task_<id>_successful"` before the value, and after "successful" the
  only consistent boolean is `true` (p(true) 0.77-0.85 for "Is fire cold?", "Is ice
  cold?", "Is fire hot?" alike). Where the model did mean "no", it chose
  `mark_task_<id>_failed` with the reason "fire is not cold": *no* read as *failed*.
* **The frame.** ControlFlow states a question as a task ("Starting task (ID ...) with
  objective: Is fire cold?") in a prompt about completing tasks; asked that way, even in
  free text, the model answered "Yes, fire is cold." Asked the question itself, it
  answered "No, fire is not cold."
* **The order of the options.** A 1.5B model opens with whichever answer the prompt
  names first, so the words are asked for without naming any (`words_hint`).

So the proxy (`agents/local_proxy.py`) (1) shows ControlFlow's completion tools to the
model as `final_answer(answer)` and `give_up(reason)` and maps the call back
(`CompletionAliases`), (2) turns the orchestrator's "Starting task" line back into the
objective itself (`agents/local_prompts.py`), and (3) when finishing is the only
sensible call (no work tools offered), lets the model answer in words first, without a
grammar, then records that answer in a second, constrained call (`words_hint`,
`RECORD_PROMPT`). A text result is the words themselves: no second call.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from typing import Any

from pydantic import BaseModel

from foreman.agents.forcing import tool_name
from foreman.cf_adapter.names import is_completion_tool, is_failure_tool, is_success_tool

ANSWER_TOOL = "final_answer"
GIVE_UP_TOOL = "give_up"
ANSWER_ARG = "answer"
RESULT_ARG = "result"  # ControlFlow's name for the success tool's argument
RECORD_PROMPT = "Now record that answer with one tool call."
# Words for a typed result need one sentence; a text result may need a paragraph.
TYPED_WORDS_MAX_TOKENS = 64


class CompletionAliases(BaseModel):
    """The neutral names shown to the model for one task's completion tools, and the way back."""

    success: str | None = None
    failure: str | None = None

    @classmethod
    def for_tools(cls, tools: list[dict[str, Any]]) -> CompletionAliases | None:
        """Aliases when the tools hold one task's completion tools (several tasks: keep the ids)."""
        names = [tool_name(t) for t in tools]
        success = [n for n in names if is_success_tool(n)]
        failure = [n for n in names if is_failure_tool(n)]
        if len(success) > 1 or len(failure) > 1 or not (success or failure):
            return None
        if ANSWER_TOOL in names or GIVE_UP_TOOL in names:
            return None  # a real tool has the alias's name
        return cls(success=success[0] if success else None, failure=failure[0] if failure else None)

    def shown(self, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`tools` as the model sees them: completion tools renamed, the result argument too."""
        out = []
        for tool in tools:
            name = tool_name(tool)
            if name == self.success:
                out.append(_renamed(tool, ANSWER_TOOL, "Give the answer: the task's result.", RESULT_ARG, ANSWER_ARG))
            elif name == self.failure:
                out.append(_renamed(tool, GIVE_UP_TOOL, "Only if something prevents any answer: say why."))
            else:
                out.append(tool)
        return out

    def restore(self, message: dict[str, Any]) -> dict[str, Any]:
        """The model's answer message with ControlFlow's own tool and argument names."""
        calls = message.get("tool_calls") or []
        if not calls:
            return message
        restored = []
        for call in calls:
            function = dict(call["function"])
            if function["name"] == ANSWER_TOOL and self.success:
                function["name"] = self.success
                function["arguments"] = _rename_arg(function["arguments"], ANSWER_ARG, RESULT_ARG)
            elif function["name"] == GIVE_UP_TOOL and self.failure:
                function["name"] = self.failure
            restored.append({**call, "function": function})
        return {**message, "tool_calls": restored}

    def real_name(self, shown: str) -> str:
        return {ANSWER_TOOL: self.success, GIVE_UP_TOOL: self.failure}.get(shown) or shown


def _renamed(tool: dict[str, Any], name: str, description: str, old_arg: str | None = None,
             new_arg: str | None = None) -> dict[str, Any]:
    tool = copy.deepcopy(tool)
    function = tool.setdefault("function", {})
    function["name"], function["description"] = name, description
    params = function.get("parameters") or {}
    props = params.get("properties") or {}
    if old_arg and new_arg and old_arg in props:
        params["properties"] = {(new_arg if k == old_arg else k): v for k, v in props.items()}
        params["required"] = [new_arg if k == old_arg else k for k in params.get("required", [])]
    return tool


def _rename_arg(arguments: str, old: str, new: str) -> str:
    try:
        args = json.loads(arguments)
    except json.JSONDecodeError:
        return arguments.replace(f'"{old}"', f'"{new}"', 1)  # an invalid call stays invalid, named right
    if isinstance(args, dict) and old in args and new not in args:
        args = {(new if k == old else k): v for k, v in args.items()}
    return json.dumps(args)


def only_completion_tools(tools: list[dict[str, Any]]) -> bool:
    """Whether finishing the task is the only thing the model can do (no work tool offered)."""
    return bool(tools) and all(is_completion_tool(tool_name(t)) for t in tools)


def result_schema(tools: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The success tool's `result` schema (None: the task takes no result)."""
    for tool in tools:
        if is_success_tool(tool_name(tool)):
            params = tool.get("function", tool).get("parameters") or {}
            schema = (params.get("properties") or {}).get(RESULT_ARG)
            if schema is None:
                return None
            ref = schema.get("$ref", "")
            defs = params.get("$defs") or params.get("definitions") or {}
            return defs.get(ref.rsplit("/", 1)[-1], schema) if ref else schema
    return None


def is_text_result(schema: dict[str, Any] | None) -> bool:
    """A plain string result: the words are the result."""
    return bool(schema) and schema.get("type") == "string" and not any(
        k in schema for k in ("enum", "const", "pattern", "format"))


def words_hint(schema: dict[str, Any] | None) -> str:
    """What to write in words, by result type: the shape of the answer without JSON."""
    if schema is None:
        return "Say in one short sentence that the task is done, or why it cannot be."
    kind = schema.get("type")
    if "enum" in schema:
        options = ", ".join(str(v) for v in schema["enum"])
        return f"Answer in one short sentence that names one of: {options}."
    if kind == "boolean":
        # Name no options: "Answer yes or no" made the 1.5B open with "Yes" (4/8 right on
        # fire/ice/sun/fish questions), "no or yes" with "No" (7/8, but "fire is not hot").
        return "Answer the question truthfully, in one short sentence."
    if kind in ("integer", "number"):
        return "Answer with the number, in one short sentence."
    if kind == "array":
        return "Answer with the items, in one short sentence."
    if kind == "object":
        fields = ", ".join(schema.get("properties") or {})
        return f"Answer in one short sentence that gives: {fields}." if fields else "Answer in one short sentence."
    return "Answer directly and briefly."


def words_as_call(value: Any, success_tool: str) -> dict[str, Any]:
    """A result the words already give (a text, or a value `value_from_words` read), as ControlFlow's
    success call: no second model call."""
    value = value.strip() if isinstance(value, str) else value
    call = {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": success_tool, "arguments": json.dumps({RESULT_ARG: value})}}
    return {"role": "assistant", "content": None, "tool_calls": [call]}


class Unread:
    """`value_from_words` found no single value: the constrained second call records the words."""


UNREAD = Unread()
_YES_NO = re.compile(r"^\W*(yes|no|true|false)\b", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.]*\d)")
_STATED = re.compile(r"(?:=|\bis|\bare|\bequals|\bhas|\bhave)\s+(-?\d+(?:\.\d+)?)", re.IGNORECASE)


def value_from_words(words: str, schema: dict[str, Any] | None) -> Any:
    """The typed result the model's words state beyond doubt, read by Python; else `UNREAD`.

    Why: the second, grammar-constrained call that turns words into JSON is where the answer
    drifted (issue #11: "No, fire is not cold." recorded as `true`) and it costs a model call.
    So a yes/no that opens with yes/no, the one number (or the number after "is" / "="), the one
    option named, are taken as said; anything less clear goes to the constrained call."""
    if not schema or not words.strip():
        return UNREAD
    kind = schema.get("type")
    if "enum" in schema:
        named = [v for v in schema["enum"] if re.search(rf"\b{re.escape(str(v))}\b", words, re.IGNORECASE)]
        return named[0] if len(named) == 1 else UNREAD
    if kind == "boolean":
        lead = _YES_NO.match(words)
        return UNREAD if lead is None else lead.group(1).lower() in ("yes", "true")
    if kind in ("integer", "number"):
        numbers = _NUMBER.findall(words.replace(",", ""))
        stated = _STATED.findall(words.replace(",", ""))
        text = numbers[0] if len(set(numbers)) == 1 else stated[-1] if stated else None
        if text is None:
            return UNREAD
        number = float(text)
        if kind == "integer":
            return int(number) if number.is_integer() else UNREAD
        return int(number) if number.is_integer() and "." not in text else number
    return UNREAD
