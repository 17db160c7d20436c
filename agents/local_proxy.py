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
4. shows ControlFlow's completion tools as `final_answer` / `give_up` and, when finishing
   is the only sensible call, lets the model answer in words before it records the
   answer (`agents/local_answer.py`: why, with the measurements);
5. forces one call with a JSON-schema `response_format` (`agents/forcing.py`);
6. answers with a standard `tool_calls` message (ControlFlow's names), streamed (SSE) or not.

Any OpenAI client (ChatOpenAI, ControlFlow, the `openai` SDK) works unmodified through
`OPENAI_BASE_URL`. Requests without tools are passed through (history still flattened).

Images (`image_url` content parts) go to llama.cpp unchanged when the server loaded a
projector (`vision`: FOREMAN_LOCAL_MMPROJ_PATH); the flattening above keeps text only, so
each user message that carried images gets its original parts back. Without a projector
a request with an image is refused (400) with what to set, instead of the image being
silently dropped.

This module is the HTTP app. The request it sends upstream (steps 1-5, and their
switches) is `agents/local_request.py`, built from `agents/local_prompts.py` and
`agents/local_answer.py`; the answers of step 6, including what happens when the forced
output cannot be parsed, are `agents/local_replies.py`. Their public functions are
re-exported here.
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

from foreman.agents import local_request
from foreman.agents.forcing import tool_name
from foreman.agents.local_answer import RECORD_PROMPT, UNREAD, value_from_words, words_as_call
from foreman.agents.local_prompts import (
    cache_friendly,
    content_text,
    flatten_tool_messages,
    split_volatile,
    tools_note,
)
from foreman.agents.local_replies import forced_message, last_tool_call, same_call, sse_for_message
from foreman.agents.local_request import (
    DESCRIBE_TOOLS,
    FORCED_DEFAULT_MAX_TOKENS,
    REORDER_FOR_CACHE,
    ToolMode,
    Upstream,
    build_upstream_body,
    plan_upstream,
)

UPSTREAM_TIMEOUT_S = 600.0
# Set to a file path to append every upstream request body as JSON lines (debugging).
DUMP_ENV = "FOREMAN_LOCAL_PROXY_DUMP"


class ProxyStats(BaseModel):
    """Running totals of llama.cpp's own timings, for `/stats` and the benchmark."""

    requests: int = 0
    forced: int = 0
    parse_failures: int = 0
    repeats_avoided: int = 0
    answered_in_words: int = 0
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


# --------------------------------------------------------------------------- the app


def create_app(
    upstream_url: str,
    model_name: str,
    *,
    info: dict[str, Any] | None = None,
    tool_mode: ToolMode = "forced",
    on_request: Callable[[], None] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    vision: bool = False,
) -> Starlette:
    """The proxy app. `upstream_url` is llama.cpp's base (`http://127.0.0.1:PORT`).

    `on_request` is called on every model request; the server uses it to reset its
    idle timer. `info` is echoed by `/health` so a caller can check which model it got.
    `transport` replaces the network to llama.cpp (tests use a fake one). `tool_mode`
    says how tool calls are made (`agents/local_request.py`). `vision`: llama.cpp loaded an
    mmproj, so image parts are passed on; without it a request carrying one is refused.
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

    async def chat_until_done(request: Request) -> Response:
        """A request that takes longer than the idle time (a long generation on a busy machine)
        must not let the server stop under it: the idle clock restarts when the answer is ready."""
        try:
            return await chat(request)
        finally:
            if on_request:
                on_request()

    async def chat(request: Request) -> Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "Request body is not JSON.")
        if has_images(body) and not vision:
            return _error(400, no_vision_message())
        plan = with_images(plan_upstream(body, tool_mode), body)
        touch(forced=bool(plan.tool_names))
        if dump_path:
            with open(dump_path, "a") as handle:  # noqa: ASYNC230  (debug only)
                handle.write(json.dumps({"request": body, "upstream": plan.body, "words": plan.words_body}) + "\n")
        if not plan.tool_names:
            return await _passthrough(plan.body)
        answered = await _answer(plan)
        if isinstance(answered, Response):
            return answered
        data, message, finish, ok = answered
        repeat = last_tool_call(body.get("messages") or [])
        if local_request.AVOID_REPEATED_CALLS and ok and repeat and len(plan.tool_names) > 1 and same_call(message, repeat):
            # The exact call whose result the model just saw: ask once more without
            # that tool, or a small model repeats it until the call limit.
            others = [t for t in body.get("tools") or [] if tool_name(t) != repeat[0]]
            retried = await _answer(plan_upstream({**body, "tools": others}, tool_mode))
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

    async def _answer(plan: Upstream) -> Response | tuple[dict[str, Any], dict[str, Any], str, bool]:
        """Words first when that is the plan, then the forced call; names mapped back to ControlFlow's."""
        body = plan.body
        if plan.native:
            return await _native(body)
        if plan.words_body is not None:
            said = await _words(plan.words_body)
            if isinstance(said, Response):
                return said
            words, data = said
            if words and plan.success_tool:
                # A text result is the words; a yes/no, number or choice they state is read by Python.
                value = words if plan.text_result else value_from_words(words, plan.result_schema)
                if value is not UNREAD:
                    with lock:
                        stats.answered_in_words += 1
                    return data, words_as_call(value, plan.success_tool), "tool_calls", True
            if words:
                body = {**body, "messages": [*body["messages"], {"role": "assistant", "content": words},
                                             {"role": "user", "content": RECORD_PROMPT}]}
        forced = await _forced(body, plan.tool_names)
        if isinstance(forced, Response) or plan.aliases is None:
            return forced
        data, message, finish, ok = forced
        return data, plan.aliases.restore(message), finish, ok

    async def _native(body: dict[str, Any]) -> Response | tuple[dict[str, Any], dict[str, Any], str, bool]:
        """llama.cpp's own tool calling: its template renders the tools, its parser reads the calls."""
        try:
            reply = await client.post("/v1/chat/completions", json=body)
        except httpx.HTTPError as exc:
            return _error(502, f"Local model server did not answer: {exc}")
        if reply.status_code != 200:
            return Response(reply.content, reply.status_code, media_type="application/json")
        data = reply.json()
        choice = (data.get("choices") or [{}])[0]
        message = {k: v for k, v in (choice.get("message") or {}).items() if k in ("role", "content", "tool_calls")}
        ok = bool(message.get("tool_calls"))
        with lock:
            stats.parse_failures += int(not ok)
            stats.add_timings(data.get("timings"))
        return data, message, choice.get("finish_reason") or "stop", ok

    async def _words(body: dict[str, Any]) -> Response | tuple[str, dict[str, Any]]:
        """The model's answer in plain words (no grammar): free decoding is ~3x faster, too."""
        try:
            reply = await client.post("/v1/chat/completions", json=body)
        except httpx.HTTPError as exc:
            return _error(502, f"Local model server did not answer: {exc}")
        if reply.status_code != 200:
            return Response(reply.content, reply.status_code, media_type="application/json")
        data = reply.json()
        with lock:
            stats.add_timings(data.get("timings"))
        choice = (data.get("choices") or [{}])[0]
        return content_text((choice.get("message") or {}).get("content")).strip(), data

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
            Route("/v1/chat/completions", chat_until_done, methods=["POST"]),
            Route("/chat/completions", chat, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    return app


def _image_parts(content: Any) -> bool:
    return isinstance(content, list) and any(
        isinstance(p, dict) and p.get("type") in ("image_url", "input_image") for p in content)


def has_images(body: dict[str, Any]) -> bool:
    """Whether any message of the request carries an image part."""
    return any(_image_parts(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict))


def _restore(messages: list[dict[str, Any]], originals: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**m, "content": originals[m["content"]]}
            if m.get("role") == "user" and isinstance(m.get("content"), str) and m["content"] in originals else m
            for m in messages]


def with_images(plan: Upstream, body: dict[str, Any]) -> Upstream:
    """`plan` with each user message that carried images given its original content parts back
    (found by its flattened text, which the steps before left unchanged)."""
    originals = {content_text(m["content"]): m["content"] for m in body.get("messages") or []
                 if isinstance(m, dict) and m.get("role") == "user" and _image_parts(m.get("content"))}
    if not originals:
        return plan
    update: dict[str, Any] = {"body": {**plan.body, "messages": _restore(plan.body.get("messages") or [], originals)}}
    if plan.words_body is not None:
        update["words_body"] = {**plan.words_body,
                                "messages": _restore(plan.words_body.get("messages") or [], originals)}
    return plan.model_copy(update=update)


def no_vision_message() -> str:
    """What a request with an image is told by a server without a projector (VisionRequired's advice)."""
    from foreman.agents.vision import HOW_TO_GET_VISION

    return ("this request carries an image, and the embedded model server has no vision projector loaded "
            f"(FOREMAN_LOCAL_MMPROJ_PATH is unset), so it cannot read images; {HOW_TO_GET_VISION}")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "foreman_local_proxy"}}, status_code=status)

__all__ = [
    "DESCRIBE_TOOLS",
    "FORCED_DEFAULT_MAX_TOKENS",
    "REORDER_FOR_CACHE",
    "ProxyStats",
    "Upstream",
    "build_upstream_body",
    "cache_friendly",
    "create_app",
    "flatten_tool_messages",
    "forced_message",
    "last_tool_call",
    "plan_upstream",
    "split_volatile",
    "sse_for_message",
    "tools_note",
]
