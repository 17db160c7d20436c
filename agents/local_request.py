"""The request the forcing proxy sends llama.cpp for one client request.

Pure functions of the OpenAI request body (no HTTP), so each rewriting step can be
tested and switched off on its own: which tools are offered and in which order, the
chat as plain text (`agents/local_prompts.py`), ControlFlow's completion tools under
neutral names and the answer-in-words request (`agents/local_answer.py`), and the
JSON-schema `response_format` that forces one call (`agents/forcing.py`). The switches
below are module constants because benchmarks flip them to measure what each is worth.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from foreman.agents.forcing import forced_response_format, tool_name
from foreman.agents.local_answer import (
    TYPED_WORDS_MAX_TOKENS,
    CompletionAliases,
    is_text_result,
    only_completion_tools,
    result_schema,
    words_hint,
)
from foreman.agents.local_prompts import (
    cache_friendly,
    content_text,
    flatten_tool_messages,
    plain_objective,
    tools_note,
)
from foreman.cf_adapter.names import is_completion_tool, is_success_tool

# Used when a forced request sets no limit: the schema caps bound a well-behaved
# answer, this bounds a looping one (~10 s of generation on 2 cores for SmolLM2).
FORCED_DEFAULT_MAX_TOKENS = 512
# Whether to tell the model which tools exist (name, arguments, description).
DESCRIBE_TOOLS = True
# Whether to move ControlFlow's task-specific prompt text to the end (see `cache_friendly`).
REORDER_FOR_CACHE = True
# Whether ControlFlow's completion tools are shown as final_answer/give_up (agents/local_answer.py).
ALIAS_COMPLETION_TOOLS = True
# Whether "Starting task (ID ...) with objective: X" is shown as just X (agents/local_prompts.py).
PLAIN_OBJECTIVE = True
# Whether, when only completion tools are offered, the model answers in words before the call.
WORDS_FIRST = True
# Whether an exact repeat of the call whose result the model just saw is asked again
# without that tool (one extra call, only when it happens).
AVOID_REPEATED_CALLS = True

# OpenAI request fields llama.cpp does not understand or that forcing replaces.
_DROP_ALWAYS = ("tools", "tool_choice", "parallel_tool_calls", "functions", "function_call")
_DROP_FORCED = ("stream", "stream_options", "response_format", "n", "logprobs", "top_logprobs")



def _selected_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tools a request lets the model call, honouring a named `tool_choice`."""
    tools = [t for t in body.get("tools") or [] if t.get("type", "function") == "function"]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        named = [t for t in tools if tool_name(t) == wanted]
        return named or tools
    if choice == "none":
        return []
    # A small model leans to the first name it is shown. Before any tool ran, offer the
    # work tools first (ending a task before using its tool loses the work); right after
    # a tool result, offer ControlFlow's task-ending tools first (else it calls the same
    # tool again and again until the call limit).
    messages = body.get("messages") or []
    after_result = bool(messages) and messages[-1].get("role") in ("tool", "function")
    return sorted(tools, key=lambda t: is_completion_tool(tool_name(t)) != after_result)


ToolMode = Literal["forced", "native", "native-required"]
"""forced: this module's grammar-constrained call. native: llama.cpp renders `tools` with
the model's own chat template and parses its `<tool_call>` output (`tool_choice` as the
client sent it); native-required: the same with `tool_choice: required`."""


class Upstream(BaseModel):
    """What to send llama.cpp for one client request, and how to read the answer back."""

    body: dict[str, Any]
    tool_names: list[str] = Field(default_factory=list, description="Names the model may write; empty: pass-through.")
    aliases: CompletionAliases | None = None
    words_body: dict[str, Any] | None = Field(default=None, description="Answer-in-words request, sent first.")
    text_result: bool = False
    result_schema: dict[str, Any] | None = Field(default=None, description="The success tool's result schema.")
    success_tool: str | None = None
    native: bool = False


def plan_upstream(body: dict[str, Any], mode: ToolMode = "forced") -> Upstream:
    """The request(s) to send to llama.cpp for `body` (see the module docstring)."""
    tools = _selected_tools(body)
    if mode != "forced" and tools:
        return _native(body, tools, mode)
    upstream = {k: v for k, v in body.items() if k not in _DROP_ALWAYS}
    upstream["messages"] = flatten_tool_messages(body.get("messages") or [])
    if "max_completion_tokens" in upstream:
        upstream.setdefault("max_tokens", upstream.pop("max_completion_tokens"))
    if not tools:
        return Upstream(body=upstream)
    for key in _DROP_FORCED:
        upstream.pop(key, None)
    aliases = CompletionAliases.for_tools(tools) if ALIAS_COMPLETION_TOOLS else None
    shown = aliases.shown(tools) if aliases else tools
    messages = plain_objective(upstream["messages"]) if PLAIN_OBJECTIVE else upstream["messages"]
    upstream.setdefault("max_tokens", FORCED_DEFAULT_MAX_TOKENS)
    upstream["stream"] = False
    words = None
    schema = result_schema(tools)
    if WORDS_FIRST and only_completion_tools(tools) and not _after_own_words(body):
        words = {**upstream, "messages": _with_note(messages, words_hint(schema))}
        if not is_text_result(schema):
            words["max_tokens"] = min(words["max_tokens"], TYPED_WORDS_MAX_TOKENS)
    note = tools_note(shown) if DESCRIBE_TOOLS else None
    upstream["messages"] = _with_note(messages, note)
    upstream["response_format"] = forced_response_format(shown)
    success = next((tool_name(t) for t in tools if is_success_tool(tool_name(t))), None)
    return Upstream(body=upstream, tool_names=[tool_name(t) for t in shown], aliases=aliases,
                    words_body=words, text_result=is_text_result(schema), result_schema=schema,
                    success_tool=success)


def _native(body: dict[str, Any], tools: list[dict[str, Any]], mode: ToolMode) -> Upstream:
    """The request as the client sent it, tools and all, for the model's own template."""
    upstream = {k: v for k, v in body.items() if k not in ("stream", "stream_options", "parallel_tool_calls")}
    if "max_completion_tokens" in upstream:
        upstream.setdefault("max_tokens", upstream.pop("max_completion_tokens"))
    upstream.setdefault("max_tokens", FORCED_DEFAULT_MAX_TOKENS)
    upstream["stream"] = False
    upstream["messages"] = merge_assistant_runs(upstream.get("messages") or [])
    if mode == "native-required":
        upstream["tool_choice"] = "required"
    return Upstream(body=upstream, tool_names=[tool_name(t) for t in tools], native=True)


def merge_assistant_runs(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive assistant messages as one: ControlFlow sends an agent's text and its tool call as
    two, and Qwen2.5's template (llama.cpp's jinja) refuses "2 or more assistant messages at the end"."""
    out: list[dict[str, Any]] = []
    for message in messages:
        previous = out[-1] if out else None
        if previous and previous.get("role") == "assistant" == message.get("role") \
                and not previous.get("tool_calls"):
            text = "\n".join(t for t in (content_text(previous.get("content")), content_text(message.get("content"))) if t)
            out[-1] = {**message, "content": text or None}
        else:
            out.append(message)
    return out


def _with_note(messages: list[dict[str, Any]], note: str | None) -> list[dict[str, Any]]:
    if REORDER_FOR_CACHE:
        return cache_friendly(messages, note)
    return messages + ([{"role": "system", "content": note}] if note else [])


def _after_own_words(body: dict[str, Any]) -> bool:
    """The client already sent the model's words back (a retry): record them, do not ask again."""
    messages = body.get("messages") or []
    return bool(messages) and messages[-1].get("role") == "assistant"


def build_upstream_body(body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The forced request to send to llama.cpp, and the tool names forced (empty: pass-through)."""
    plan = plan_upstream(body)
    return plan.body, plan.tool_names
