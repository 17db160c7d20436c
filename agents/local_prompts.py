"""The chat a small model's template can render: tool history as text, task text last, a tool list.

The forcing proxy (`agents/local_proxy.py`) sends a tool-bearing request to llama.cpp as
plain chat, because the templates of SmolLM2 and most small GGUFs know no tools. This
module holds that rewriting, as pure functions on OpenAI message and tool dicts, apart
from the HTTP app that uses it:

* `flatten_tool_messages` writes earlier tool calls and results as ordinary turns (the
  template would silently drop them, so the model would never see a result);
* `split_volatile` / `cache_friendly` move ControlFlow's task-specific prompt text from
  the top of its system prompt to just before the latest user turn, so llama.cpp's
  prefix cache is shared across tasks;
* `tools_note` names the tools, because the model cannot see the `tools` field.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from foreman.agents.forcing import tool_name

# Whether the moved task text goes just before the latest user turn (else at the end).
TAIL_BEFORE_LAST_USER = True
# Whether the moved task text is cut to objective/instructions/context/result type.
LEAN_TASK_TAIL = True
# An experiment switch for bench/local_model.py --drop-section: ControlFlow system-prompt sections
# ("Agent", "Flow", "Instructions", "LLM Instructions", "Memories", "Active Tasks", "Tools") left
# out of what the small model reads. Read per request, in the server process.
DROP_SECTIONS_ENV = "FOREMAN_LOCAL_PROMPT_DROP"


def dropped_sections() -> set[str]:
    return {name.strip().lower() for name in os.environ.get(DROP_SECTIONS_ENV, "").split(",") if name.strip()}


def _heading(section: str) -> str:
    first = section.lstrip().split("\n", 1)[0]
    return first.lstrip("#").strip().lower() if first.startswith("#") else ""


def content_text(content: Any) -> str:
    """Message content as plain text (the small templates only render strings)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in content
        )
    return str(content)


def _call_as_text(call: dict[str, Any]) -> str:
    """An earlier tool call, written the way the forced grammar makes the model write it."""
    function = call.get("function") or {}
    raw = function.get("arguments") or "{}"
    try:
        args: Any = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        args = raw
    return json.dumps({"name": function.get("name"), "arguments": args})


def flatten_tool_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rewrite tool calls and tool results as ordinary assistant/user text.

    Templates without tool support drop `tool_calls` and render the `tool` role as an
    unknown speaker; this keeps the exchange visible. Consecutive tool results become
    one user message so user/assistant turns still alternate.
    """
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role == "assistant" and message.get("tool_calls"):
            calls = message["tool_calls"]
            for call in calls:
                names[call.get("id", "")] = (call.get("function") or {}).get("name", "")
            parts = [content_text(message.get("content")).strip()]
            parts += [_call_as_text(c) for c in calls]
            out.append({"role": "assistant", "content": "\n".join(p for p in parts if p)})
        elif role in ("tool", "function"):
            name = names.get(message.get("tool_call_id", ""), message.get("name") or "tool")
            text = f"Result of {name}: {content_text(message.get('content'))}"
            if out and out[-1].get("_tool_result"):
                out[-1]["content"] += "\n" + text
            else:
                out.append({"role": "user", "content": text, "_tool_result": True})
        else:
            clean = {k: v for k, v in message.items() if k in ("role", "content", "name")}
            clean["content"] = content_text(message.get("content"))
            out.append(clean)
    for message in out:
        message.pop("_tool_result", None)
    return out


_TASK_BLOCK = re.compile(r"<Task ID ([^>\s]+)>.*?</Task>", re.DOTALL)
# ControlFlow's orchestrator message that starts a task (controlflow/orchestration/orchestrator.py).
_STARTING_TASK = re.compile(
    r"\A\(The following message is from the orchestrator\.\)\s*Starting task (?:.+? )?\(ID [^)\s]+\) "
    r"with objective: (.*)\Z", re.DOTALL)
_HEADING = re.compile(r"(?m)^(?=#{1,6} )")


def split_volatile(system: str) -> tuple[str, str]:
    """Split a ControlFlow system prompt into (stable, task-specific) text.

    llama.cpp reuses its KV cache only for a shared prompt *prefix*, and ControlFlow
    names the task (id, objective, result type) early in its system prompt, so a new
    task recomputes the whole prompt and all earlier history. Moving the
    `<Task ...>` blocks, and every section that names a task id, to the end keeps the
    agent/flow/rules text as a prefix shared by all tasks. Text is moved, not changed.
    Anything that is not ControlFlow's layout comes back unchanged as `(system, "")`.
    """
    ids = _TASK_BLOCK.findall(system)
    if not ids:
        return system, ""
    blocks = [m.group(0) for m in _TASK_BLOCK.finditer(system)]
    rest = _TASK_BLOCK.sub("(details at the end)", system)
    stable, volatile = [], []
    drop, top = dropped_sections(), ""
    for section in _HEADING.split(rest):
        if section.startswith("# "):
            top = _heading(section)  # its "## ..." subsections go with it
        if drop and top in drop:
            continue
        (volatile if any(i in section for i in ids) else stable).append(section)
    lean = [_lean_block(b, show_id=len(blocks) > 1) for b in blocks] if LEAN_TASK_TAIL else []
    if lean and all(lean):
        tail = "\n\n".join(lean)
    else:
        tail = "# Active task details\n\n" + "\n\n".join(blocks) + "\n\n" + "".join(volatile)
    return _squeeze("".join(stable)), _squeeze(tail)


_TASK_FIELD = re.compile(
    r"^- (objective|instructions|result type|context): (.*?)(?=^- [a-zA-Z ]+?:|</Task>|\Z)", re.MULTILINE | re.DOTALL
)


def _lean_block(block: str, *, show_id: bool) -> str:
    """A task block cut to what a small model needs: objective, instructions, type, context.

    Ids, agent lists and the subtask tree are what a 135M model copies into its answer
    (measured: results like the completion tool's name or the id's digits).
    """
    fields = {name: " ".join(value.split()) for name, value in _TASK_FIELD.findall(block)}
    if "objective" not in fields:
        return ""
    head = f"Task {_TASK_BLOCK.match(block).group(1)}" if show_id else _head(fields["objective"])
    lines = [f"{head}: {fields['objective']}"]
    lines += [f"{name.capitalize()}: {fields[name]}" for name in ("instructions", "context", "result type")
              if name in fields]
    return "\n".join(lines)


def _head(objective: str) -> str:
    """A question is shown as one: "Your task: Is fire cold?" made the model answer yes (issue #11)."""
    return "Question" if objective.rstrip().endswith("?") else "Your task"


def plain_objective(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ControlFlow's "Starting task (ID ...) with objective: X" turns become just X.

    Asked as a task to complete, a small model answers a yes/no question "yes" (it reads
    as "done"); asked the objective itself, it answers it (measured, `agents/local_answer.py`).
    """
    out = []
    for message in messages:
        match = _STARTING_TASK.match(message.get("content") or "") if message.get("role") == "user" else None
        out.append({**message, "content": match.group(1).strip()} if match else message)
    return out


def _squeeze(text: str) -> str:
    """Collapse the template's runs of blank lines: fewer tokens, same text."""
    return re.sub(r"\n[ \t]*(\n[ \t]*)+\n", "\n\n", text).strip()


def cache_friendly(messages: list[dict[str, Any]], note: str | None) -> list[dict[str, Any]]:
    """Stable text first, then history, then what changes per task (plus `note`).

    Between tasks of one flow the shared prefix then covers the whole earlier history.
    Within a task each turn recomputes only the new messages and the short tail.
    """
    out, tails = [], []
    for message in messages:
        if message.get("role") == "system":
            stable, tail = split_volatile(content_text(message.get("content")))
            if tail:
                tails.append(tail)
                message = {**message, "content": stable}
        out.append(message)
    if note:
        tails.append(note)
    if tails:
        # Just before the latest user turn, so the model reads the question last.
        at = len(out) - 1 if TAIL_BEFORE_LAST_USER and out and out[-1].get("role") == "user" else len(out)
        out.insert(at, {"role": "system", "content": "\n\n".join(tails)})
    return out


def _describe_params(params: dict[str, Any]) -> str:
    props = params.get("properties") or {}
    defs = params.get("$defs") or params.get("definitions") or {}
    parts = []
    for key, schema in props.items():
        ref = schema.get("$ref", "")
        schema = defs.get(ref.rsplit("/", 1)[-1], schema) if ref else schema
        kind = schema.get("type") or ("choice" if "enum" in schema else "object")
        if "enum" in schema:
            kind = " | ".join(json.dumps(v) for v in schema["enum"])
        parts.append(f"{key}: {kind}")
    return ", ".join(parts)


def tools_note(tools: list[dict[str, Any]]) -> str:
    """A short system note naming the tools; the model cannot see the `tools` field."""
    lines = ['Answer with one tool call as JSON: {"name": <tool>, "arguments": {...}}. Tools:']
    for tool in tools:
        function = tool.get("function", tool)
        description = " ".join((function.get("description") or "").split())
        params = _describe_params(function.get("parameters") or {})
        lines.append(f"- {tool_name(tool)}({params}): {description}"[:400])
    return "\n".join(lines)
