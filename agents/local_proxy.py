"""An OpenAI-compatible endpoint in front of llama.cpp that makes tool calls work.

llama.cpp's server speaks OpenAI, but for a model whose chat template has no tool
support (SmolLM2, most small GGUFs) it ignores `tools` and fails on `tool_choice`.
This proxy sits in front of it on loopback and, whenever a request carries `tools`:

1. rewrites earlier tool calls and tool results into plain chat text the template can
   render (it would silently drop them otherwise, so the model would never see results);
2. adds a short note listing the tools, because the model sees no tool descriptions;
3. moves ControlFlow's task-specific prompt text (task id, objective, result type)
   from the top of its system prompt to just before the latest user turn, cut to what
   a small model needs, so llama.cpp's prefix cache is shared across tasks;
4. forces one call with a JSON-schema `response_format` (`agents/forcing.py`);
5. answers with a standard `tool_calls` message, streamed (SSE) or not.

Any OpenAI client (ChatOpenAI, ControlFlow, the `openai` SDK) works unmodified through
`OPENAI_BASE_URL`. Requests without tools are passed through (history still flattened).

When the forced output cannot be parsed (the model ran out of tokens mid-JSON) and the
tool name is known, the answer is a tool call whose `arguments` is the raw text: the
client's own invalid-tool-call path runs (LangChain's `invalid_tool_calls`; ControlFlow
then reports the error to the model, which can retry). With no usable name the text
comes back as `content`. The grammar makes both rare: they need the token limit.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from foreman.agents.forcing import forced_response_format, parse_forced_output, tool_name

# Used when a forced request sets no limit: the schema caps bound a well-behaved
# answer, this bounds a looping one (~10 s of generation on 2 cores for SmolLM2).
FORCED_DEFAULT_MAX_TOKENS = 512
# Whether to tell the model which tools exist (name, arguments, description).
DESCRIBE_TOOLS = True
# Whether to move ControlFlow's task-specific prompt text to the end (see `cache_friendly`).
REORDER_FOR_CACHE = True
TAIL_BEFORE_LAST_USER = True
# Whether the moved task text is cut to objective/instructions/context/result type.
LEAN_TASK_TAIL = True
# Whether an exact repeat of the call whose result the model just saw is asked again
# without that tool (one extra call, only when it happens).
AVOID_REPEATED_CALLS = True
UPSTREAM_TIMEOUT_S = 600.0
# Set to a file path to append every upstream request body as JSON lines (debugging).
DUMP_ENV = "FOREMAN_LOCAL_PROXY_DUMP"

# OpenAI request fields llama.cpp does not understand or that forcing replaces.
_DROP_ALWAYS = ("tools", "tool_choice", "parallel_tool_calls", "functions", "function_call")
_DROP_FORCED = ("stream", "stream_options", "response_format", "n", "logprobs", "top_logprobs")


class ProxyStats(BaseModel):
    """Running totals of llama.cpp's own timings, for `/stats` and the benchmark."""

    requests: int = 0
    forced: int = 0
    parse_failures: int = 0
    repeats_avoided: int = 0
    prompt_tokens: int = 0
    prompt_ms: float = 0.0
    cached_tokens: int = 0
    predicted_tokens: int = 0
    predicted_ms: float = 0.0
    last_request_at: float = 0.0

    def add_timings(self, timings: dict[str, Any] | None) -> None:
        if not timings:
            return
        self.prompt_tokens += int(timings.get("prompt_n", 0))
        self.prompt_ms += float(timings.get("prompt_ms", 0.0))
        self.cached_tokens += int(timings.get("cache_n", 0))
        self.predicted_tokens += int(timings.get("predicted_n", 0))
        self.predicted_ms += float(timings.get("predicted_ms", 0.0))


# --------------------------------------------------------------------------- rewriting


def _text(content: Any) -> str:
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
            parts = [_text(message.get("content")).strip()] + [_call_as_text(c) for c in calls]
            out.append({"role": "assistant", "content": "\n".join(p for p in parts if p)})
        elif role in ("tool", "function"):
            name = names.get(message.get("tool_call_id", ""), message.get("name") or "tool")
            text = f"Result of {name}: {_text(message.get('content'))}"
            if out and out[-1].get("_tool_result"):
                out[-1]["content"] += "\n" + text
            else:
                out.append({"role": "user", "content": text, "_tool_result": True})
        else:
            clean = {k: v for k, v in message.items() if k in ("role", "content", "name")}
            clean["content"] = _text(message.get("content"))
            out.append(clean)
    for message in out:
        message.pop("_tool_result", None)
    return out


_TASK_BLOCK = re.compile(r"<Task ID ([^>\s]+)>.*?</Task>", re.DOTALL)
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
    for section in _HEADING.split(rest):
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
    (measured: results like 'mark_task_..._successful' or the id's digits).
    """
    fields = {name: " ".join(value.split()) for name, value in _TASK_FIELD.findall(block)}
    if "objective" not in fields:
        return ""
    head = f"Task {_TASK_BLOCK.match(block).group(1)}" if show_id else "Your task"
    lines = [f"{head}: {fields['objective']}"]
    lines += [f"{name.capitalize()}: {fields[name]}" for name in ("instructions", "context", "result type")
              if name in fields]
    return "\n".join(lines)


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
            stable, tail = split_volatile(_text(message.get("content")))
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


_COMPLETION_TOOL = re.compile(r"^mark_task_\w+_(successful|failed)$")


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
    return sorted(tools, key=lambda t: bool(_COMPLETION_TOOL.match(tool_name(t))) != after_result)


def build_upstream_body(body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The request to send to llama.cpp, and the tool names forced (empty: pass-through)."""
    tools = _selected_tools(body)
    upstream = {k: v for k, v in body.items() if k not in _DROP_ALWAYS}
    upstream["messages"] = flatten_tool_messages(body.get("messages") or [])
    if "max_completion_tokens" in upstream:
        upstream.setdefault("max_tokens", upstream.pop("max_completion_tokens"))
    if not tools:
        return upstream, []
    for key in _DROP_FORCED:
        upstream.pop(key, None)
    note = tools_note(tools) if DESCRIBE_TOOLS else None
    if REORDER_FOR_CACHE:
        upstream["messages"] = cache_friendly(upstream["messages"], note)
    elif note:
        upstream["messages"].append({"role": "system", "content": note})
    upstream["response_format"] = forced_response_format(tools)
    upstream.setdefault("max_tokens", FORCED_DEFAULT_MAX_TOKENS)
    upstream["stream"] = False
    return upstream, [tool_name(t) for t in tools]


# --------------------------------------------------------------------------- answers


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


def _same_call(message: dict[str, Any], call: tuple[str, dict[str, Any]]) -> bool:
    calls = message.get("tool_calls") or []
    if not calls:
        return False
    function = calls[0]["function"]
    return function["name"] == call[0] and json.loads(function["arguments"]) == call[1]

_NAME_IN_TEXT = re.compile(r'"name"\s*:\s*"([^"]+)"')
_ARGS_IN_TEXT = re.compile(r'"arguments"\s*:\s*(.*)', re.DOTALL)


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


# --------------------------------------------------------------------------- the app


def create_app(
    upstream_url: str,
    model_name: str,
    *,
    info: dict[str, Any] | None = None,
    on_request: Callable[[], None] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """The proxy app. `upstream_url` is llama.cpp's base (`http://127.0.0.1:PORT`).

    `on_request` is called on every model request; the server uses it to reset its
    idle timer. `info` is echoed by `/health` so a caller can check which model it got.
    `transport` replaces the network to llama.cpp (tests use a fake one).
    """
    stats = ProxyStats()
    dump_path = os.environ.get(DUMP_ENV)
    lock = threading.Lock()
    client = httpx.AsyncClient(
        base_url=upstream_url, timeout=UPSTREAM_TIMEOUT_S, transport=transport
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    def touch(forced: bool = False) -> None:
        with lock:
            stats.requests += 1
            stats.forced += int(forced)
            stats.last_request_at = time.time()
        if on_request:
            on_request()

    async def health(_: Request) -> Response:
        try:
            upstream = await client.get("/health", timeout=5.0)
            ok = upstream.status_code == 200
        except httpx.HTTPError:
            ok = False
        body = {"status": "ok" if ok else "upstream unavailable", "model": model_name, **(info or {})}
        return JSONResponse(body, status_code=200 if ok else 503)

    async def models(_: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "foreman"}]}
        )

    async def get_stats(_: Request) -> Response:
        return JSONResponse(stats.model_dump())

    async def chat(request: Request) -> Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "Request body is not JSON.")
        upstream, tool_names = build_upstream_body(body)
        touch(forced=bool(tool_names))
        if dump_path:
            with open(dump_path, "a") as handle:  # noqa: ASYNC230  (debug only)
                handle.write(json.dumps({"request": body, "upstream": upstream}) + "\n")
        if not tool_names:
            return await _passthrough(upstream)
        forced = await _forced(upstream, tool_names)
        if isinstance(forced, Response):
            return forced
        data, message, finish, ok = forced
        repeat = last_tool_call(body.get("messages") or [])
        if AVOID_REPEATED_CALLS and ok and repeat and len(tool_names) > 1 and _same_call(message, repeat):
            # The exact call whose result the model just saw: ask once more without
            # that tool, or a small model repeats it until the call limit.
            others = [t for t in body.get("tools") or [] if tool_name(t) != repeat[0]]
            upstream, tool_names = build_upstream_body({**body, "tools": others})
            retried = await _forced(upstream, tool_names)
            if not isinstance(retried, Response):
                data, message, finish, ok = retried
                with lock:
                    stats.repeats_avoided += 1
        base = {"id": data.get("id", f"chatcmpl-{uuid.uuid4().hex}"),
                "created": data.get("created", int(time.time())), "model": model_name}
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = sse_for_message(
                base, message, finish, data.get("usage") if include_usage else None, data.get("timings")
            )

            async def replay() -> AsyncIterator[bytes]:
                for chunk in chunks:
                    yield chunk

            return StreamingResponse(replay(), media_type="text/event-stream")
        return JSONResponse(
            {**base, "object": "chat.completion",
             "choices": [{"index": 0, "message": message, "finish_reason": finish}],
             "usage": data.get("usage"), "timings": data.get("timings")}
        )

    async def _forced(
        upstream: dict[str, Any], tool_names: list[str]
    ) -> Response | tuple[dict[str, Any], dict[str, Any], str, bool]:
        """One forced call upstream: (llama.cpp's reply, OpenAI message, finish, parsed ok)."""
        try:
            reply = await client.post("/v1/chat/completions", json=upstream)
        except httpx.HTTPError as exc:
            return _error(502, f"Local model server did not answer: {exc}")
        if reply.status_code != 200:
            return Response(reply.content, reply.status_code, media_type="application/json")
        data = reply.json()
        choice = (data.get("choices") or [{}])[0]
        text = _text((choice.get("message") or {}).get("content"))
        message, finish, ok = forced_message(text, tool_names)
        with lock:
            stats.parse_failures += int(not ok)
            stats.add_timings(data.get("timings"))
        return data, message, finish, ok

    async def _passthrough(upstream: dict[str, Any]) -> Response:
        if not upstream.get("stream"):
            try:
                reply = await client.post("/v1/chat/completions", json=upstream)
            except httpx.HTTPError as exc:
                return _error(502, f"Local model server did not answer: {exc}")
            if reply.status_code == 200:
                with lock:
                    stats.add_timings(reply.json().get("timings"))
            return Response(reply.content, reply.status_code, media_type="application/json")
        request = client.build_request("POST", "/v1/chat/completions", json=upstream)
        try:
            reply = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            return _error(502, f"Local model server did not answer: {exc}")

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in reply.aiter_raw():
                    yield chunk
            finally:
                await reply.aclose()

        return StreamingResponse(relay(), status_code=reply.status_code, media_type="text/event-stream")

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/health", health),
            Route("/stats", get_stats),
            Route("/v1/models", models),
            Route("/models", models),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/chat/completions", chat, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    return app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "foreman_local_proxy"}}, status_code=status)
