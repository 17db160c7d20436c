"""The model's forced output as the OpenAI answer a client expects: a tool call, or SSE chunks.

llama.cpp answers a forced request (`agents/local_proxy.py`) with JSON text. This module
turns that text into a standard assistant message with `tool_calls` (or, when nothing
usable was written, plain `content`), replays a finished answer as the server-sent
events of an OpenAI streaming reply, and recognises an exact repeat of the call whose
result the model just saw. Pure functions, apart from the HTTP app that uses them.

When the forced output cannot be parsed (the model ran out of tokens mid-JSON) and the
tool name is known, the answer is a tool call whose `arguments` is the raw text: the
client's own invalid-tool-call path runs (LangChain's `invalid_tool_calls`; ControlFlow
then reports the error to the model, which can retry). With no usable name the text
comes back as `content`. The grammar makes both rare: they need the token limit.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from foreman.agents.forcing import parse_forced_output

_NAME_IN_TEXT = re.compile(r'"name"\s*:\s*"([^"]+)"')
_ARGS_IN_TEXT = re.compile(r'"arguments"\s*:\s*(.*)', re.DOTALL)


def last_tool_call(messages: list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """(name, args) of the call whose result ends `messages`, if they end with one."""
    if not messages or messages[-1].get("role") not in ("tool", "function"):
        return None
    wanted = messages[-1].get("tool_call_id")
    for message in reversed(messages):
        for call in message.get("tool_calls") or []:
            if wanted is None or call.get("id") == wanted:
                function = call.get("function") or {}
                try:
                    args = json.loads(function.get("arguments") or "{}")
                except json.JSONDecodeError:
                    args = {}
                return function.get("name", ""), args
    return None


def same_call(message: dict[str, Any], call: tuple[str, dict[str, Any]]) -> bool:
    """Whether the answer `message` calls `call`'s tool with the same arguments."""
    calls = message.get("tool_calls") or []
    if not calls:
        return False
    function = calls[0]["function"]
    return function["name"] == call[0] and json.loads(function["arguments"]) == call[1]


def forced_message(text: str, tool_names: list[str]) -> tuple[dict[str, Any], str, bool]:
    """The OpenAI assistant message for the model's forced output: (message, finish, ok)."""
    parsed = parse_forced_output(text, tool_names)
    if parsed.ok:
        name, arguments = parsed.name, json.dumps(parsed.args)
    else:
        # Salvage the name so the client reports an invalid call of that tool.
        match = _NAME_IN_TEXT.search(text or "")
        if not match or match.group(1) not in tool_names:
            return {"role": "assistant", "content": text or parsed.error}, "stop", False
        name = match.group(1)
        rest = _ARGS_IN_TEXT.search(text)
        arguments = rest.group(1).strip() if rest else (text or "")
    call = {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return message, "tool_calls", parsed.ok


def _chunk(base: dict[str, Any], delta: dict[str, Any], finish: str | None) -> bytes:
    payload = {
        **base,
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(payload)}\n\n".encode()


def sse_for_message(
    base: dict[str, Any],
    message: dict[str, Any],
    finish: str,
    usage: dict[str, Any] | None,
    timings: dict[str, Any] | None,
) -> list[bytes]:
    """A complete answer as the SSE chunks an OpenAI streaming client expects."""
    chunks = []
    if message.get("tool_calls"):
        call = message["tool_calls"][0]
        head = {"index": 0, "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""}}
        chunks.append(_chunk(base, {"role": "assistant", "content": None, "tool_calls": [head]}, None))
        args = {"index": 0, "function": {"arguments": call["function"]["arguments"]}}
        chunks.append(_chunk(base, {"tool_calls": [args]}, None))
    else:
        chunks.append(_chunk(base, {"role": "assistant", "content": message.get("content")}, None))
    final = json.loads(_chunk(base, {}, finish)[6:])
    if timings:
        final["timings"] = timings
    chunks.append(f"data: {json.dumps(final)}\n\n".encode())
    if usage is not None:
        chunks.append(
            f"data: {json.dumps({**base, 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n".encode()
        )
    chunks.append(b"data: [DONE]\n\n")
    return chunks
