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

This module is the HTTP app and the request it sends upstream. The rewriting of steps
1-3 is `agents/local_prompts.py` (its switches `LEAN_TASK_TAIL` and
`TAIL_BEFORE_LAST_USER` live there); the answers of step 5, including what happens
when the forced output cannot be parsed, are `agents/local_replies.py`. Their public
functions are re-exported here.
"""

from __future__ import annotations

import contextlib
import json
import os
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

from foreman.agents.forcing import forced_response_format, tool_name
from foreman.agents.local_prompts import (
    cache_friendly,
    content_text,
    flatten_tool_messages,
    split_volatile,
    tools_note,
)
from foreman.agents.local_replies import forced_message, last_tool_call, same_call, sse_for_message
from foreman.cf_adapter.names import is_completion_tool

# Used when a forced request sets no limit: the schema caps bound a well-behaved
# answer, this bounds a looping one (~10 s of generation on 2 cores for SmolLM2).
FORCED_DEFAULT_MAX_TOKENS = 512
# Whether to tell the model which tools exist (name, arguments, description).
DESCRIBE_TOOLS = True
# Whether to move ControlFlow's task-specific prompt text to the end (see `cache_friendly`).
REORDER_FOR_CACHE = True
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


# --------------------------------------------------------------------------- the request


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
        if AVOID_REPEATED_CALLS and ok and repeat and len(tool_names) > 1 and same_call(message, repeat):
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
        text = content_text((choice.get("message") or {}).get("content"))
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

__all__ = [
    "AVOID_REPEATED_CALLS",
    "DESCRIBE_TOOLS",
    "FORCED_DEFAULT_MAX_TOKENS",
    "REORDER_FOR_CACHE",
    "ProxyStats",
    "build_upstream_body",
    "cache_friendly",
    "create_app",
    "flatten_tool_messages",
    "forced_message",
    "last_tool_call",
    "split_volatile",
    "sse_for_message",
    "tools_note",
]
