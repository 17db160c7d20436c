"""A scripted chat model: deterministic replies and tool calls for tests and benchmarks.

It is a real LangChain `BaseChatModel`, so it drives the real ControlFlow + Prefect
path (turns, tool calls, completion tools, Prefect task runs); only the thinking is
scripted. Each turn it records which tools were bound, which is how tests prove the
effective tool set of a task.

Replies name tools literally, or use two placeholders that resolve against the tools
bound in that turn, because ControlFlow names completion tools after task ids:
`$succeed` (the first `mark_task_*_successful` tool) and `$fail`.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from foreman.cf_adapter import names
from foreman.errors import ScriptExhausted

SUCCEED = "$succeed"
FAIL = "$fail"


class ScriptedCall(BaseModel):
    """One tool call in a scripted reply."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class ScriptedReply(BaseModel):
    """What the model says in one turn: text, tool calls, or both."""

    content: str = ""
    tool_calls: list[ScriptedCall] = Field(default_factory=list)


class Turn(BaseModel):
    """What the model was shown in one turn, kept for assertions."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    tool_names: list[str]
    messages: list[BaseMessage]
    started: float
    finished: float = 0.0

    @property
    def task_ids(self) -> list[str]:
        """Ids of the ControlFlow tasks whose completion tools were bound this turn."""
        return [
            names.task_id_of(name) for name in self.tool_names if names.is_success_tool(name)
        ]


Responder = Callable[[Turn], ScriptedReply]


def call(name: str, **args: Any) -> ScriptedReply:
    """Shorthand for a reply that makes a single tool call."""
    return ScriptedReply(tool_calls=[ScriptedCall(name=name, args=args)])


def succeed(result: Any = None) -> ScriptedReply:
    """A reply that completes the current task, with `result` when the task has a result type."""
    return call(SUCCEED, **({} if result is None else {"result": result}))


def succeed_model(**fields: Any) -> ScriptedReply:
    """Complete a task whose result type is a pydantic model: ControlFlow takes its fields as arguments."""
    return call(SUCCEED, **fields)


def fail(reason: str = "scripted failure") -> ScriptedReply:
    return call(FAIL, reason=reason)




class ScriptedChatModel(BaseChatModel):
    """Replies from a list (in order) or from a responder function called with each turn.

    `latency_s` sleeps before each reply, to stand in for a real model's time.
    Thread-safe: concurrent tasks share one script.
    """

    replies: list[ScriptedReply] = Field(default_factory=list)
    responder: Responder | None = None
    latency_s: float = 0.0
    turns: list[Turn] = Field(default_factory=list, repr=False)  # str(model) runs every call
    _cursor: Iterator[int] = PrivateAttr(default_factory=itertools.count)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _bound_tools: list[str] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "foreman-scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        names = [_tool_name(t) for t in tools]
        return self.bind(tool_names=names, **kwargs)

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Any = None) -> int:
        # Cheap and deterministic; ControlFlow only uses it to trim history.
        return sum(len(str(m.content)) // 4 + 4 for m in messages)

    def _reply(self, messages: list[BaseMessage], tool_names: list[str]) -> AIMessage:
        turn = Turn(tool_names=list(tool_names), messages=list(messages), started=time.monotonic())
        with self._lock:
            self.turns.append(turn)
            index = next(self._cursor)
        if self.latency_s:
            time.sleep(self.latency_s)
        if self.responder is not None:
            reply = self.responder(turn)
        elif index < len(self.replies):
            reply = self.replies[index]
        else:
            raise ScriptExhausted(
                f"the script has {len(self.replies)} replies but turn {index + 1} was requested; "
                f"tools bound this turn: {tool_names}"
            )
        turn.finished = time.monotonic()
        return _to_message(reply, tool_names, index)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        tool_names: list[str] | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = self._reply(messages, tool_names or [])
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        tool_names: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        message = self._reply(messages, tool_names or [])
        chunk = AIMessageChunk(
            content=message.content,
            tool_call_chunks=[
                {"name": c["name"], "args": _json(c["args"]), "id": c["id"], "index": i}
                for i, c in enumerate(message.tool_calls)
            ],
            usage_metadata=message.usage_metadata,
        )
        yield ChatGenerationChunk(message=chunk)


def _tool_name(tool: Any) -> str:
    if isinstance(tool, dict):
        return tool.get("name") or tool.get("function", {}).get("name", "")
    return getattr(tool, "name", str(tool))


def _resolve(name: str, tool_names: list[str]) -> str:
    if name not in (SUCCEED, FAIL):
        return name
    wanted = names.is_success_tool if name == SUCCEED else names.is_failure_tool
    for candidate in tool_names:
        if wanted(candidate):
            return candidate
    raise ScriptExhausted(f"{name} was scripted but no completion tool is bound: {tool_names}")


def _to_message(reply: ScriptedReply, tool_names: list[str], index: int) -> AIMessage:
    calls = [
        {"name": _resolve(c.name, tool_names), "args": c.args, "id": f"call_{index}_{i}"}
        for i, c in enumerate(reply.tool_calls)
    ]
    tokens_in, tokens_out = 100, 10 + len(reply.content) // 4
    return AIMessage(
        content=reply.content,
        tool_calls=calls,
        usage_metadata={
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
        },
    )


def _json(value: Any) -> str:
    return json.dumps(value)
