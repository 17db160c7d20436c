"""The embedded local model: forcing, the proxy, the shared server, and ControlFlow on it.

Fast tests cover the pure forcing/parsing functions and the proxy against a fake
llama.cpp. Tests marked `slow` start the real embedded server: on the tiny model
(SmolLM2-135M) a valid tool call over plain HTTP, one shared server across processes, a
restart when the model changes, idling out; on the default model (pulled by install.sh)
real ControlFlow tasks in a Prefect flow, with right answers.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from starlette.testclient import TestClient

from foreman.agents.forcing import ForcingError, forced_response_format, parse_forced_output
from foreman.agents.local_answer import CompletionAliases
from foreman.agents.local_proxy import (
    build_upstream_body,
    create_app,
    flatten_tool_messages,
    forced_message,
    last_tool_call,
    plan_upstream,
    split_volatile,
)
from foreman.agents.local_server import (
    LocalModelError,
    ServerConfig,
    bundled_model_path,
    resolve_model_path,
)
from foreman.agents.model_catalog import DEFAULT_MODEL, TINY_MODEL
from foreman.cf_adapter.names import (
    COMPLETION_PREFIX,
    FAILURE_SUFFIX,
    SUCCESS_SUFFIX,
)
from foreman.settings import Settings


def _tool(name: str, params: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": params}}


# ControlFlow's completion tools for a task with id ab12cd34, named the way it names them.
SUCCESS_NAME = f"{COMPLETION_PREFIX}ab12cd34{SUCCESS_SUFFIX}"
FAILED_NAME = f"{COMPLETION_PREFIX}ab12cd34{FAILURE_SUFFIX}"
SUCCESS = _tool(
    SUCCESS_NAME,
    {"type": "object", "properties": {"result": {"type": "integer"}}, "required": ["result"],
     "additionalProperties": False},
    "Mark task ab12cd34 as successful.",
)
FAILED = _tool(
    FAILED_NAME,
    {"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]},
)
PAINT = _tool(
    "paint",
    {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}}, "required": ["color"]},
    "Paint the wall.",
)


# --------------------------------------------------------------------------- forcing


class Person(BaseModel):
    name: str
    friends: list[str]


class Team(BaseModel):
    lead: Person
    members: list[Person]


def test_one_tool_is_forced_by_a_const_name_and_its_parameters() -> None:
    schema = forced_response_format([SUCCESS])["json_schema"]["schema"]
    assert schema["properties"]["name"] == {"const": SUCCESS_NAME}
    assert schema["properties"]["arguments"]["properties"]["result"] == {"type": "integer"}
    assert schema["required"] == ["name", "arguments"]


def test_several_tools_become_any_of_one_variant_each() -> None:
    rf = forced_response_format([SUCCESS, FAILED, PAINT])
    assert rf["type"] == "json_schema"
    names = [v["properties"]["name"]["const"] for v in rf["json_schema"]["schema"]["anyOf"]]
    assert names == [SUCCESS_NAME, FAILED_NAME, "paint"]


def test_defs_are_lifted_to_the_root_and_conflicts_renamed() -> None:
    a = _tool("a", {"type": "object", "properties": {"p": {"$ref": "#/$defs/P"}},
                    "$defs": {"P": {"type": "object", "properties": {"x": {"type": "integer"}}}}})
    b = _tool("b", {"type": "object", "properties": {"p": {"$ref": "#/$defs/P"}},
                    "$defs": {"P": {"type": "object", "properties": {"y": {"type": "string"}}}}})
    schema = forced_response_format([a, b])["json_schema"]["schema"]
    assert set(schema["$defs"]) == {"P", "b__P"}
    variants = schema["anyOf"]
    assert variants[0]["properties"]["arguments"]["properties"]["p"] == {"$ref": "#/$defs/P"}
    assert variants[1]["properties"]["arguments"]["properties"]["p"] == {"$ref": "#/$defs/b__P"}
    assert "$defs" not in variants[0]["properties"]["arguments"]


def test_arrays_and_free_strings_are_capped_but_bounded_ones_left_alone() -> None:
    params = {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"type": "string"}},
        "few": {"type": "array", "items": {"type": "integer"}, "maxItems": 3},
        "color": {"type": "string", "enum": ["red", "blue"]},
        "note": {"type": "string"},
    }}
    tool = _tool("t", params)
    original = copy.deepcopy(tool)
    args = forced_response_format([tool], max_items=7, max_string_length=50)["json_schema"]["schema"][
        "properties"]["arguments"]
    assert args["properties"]["tags"]["maxItems"] == 7
    assert args["properties"]["tags"]["items"]["maxLength"] == 50
    assert args["properties"]["few"]["maxItems"] == 3
    assert "maxLength" not in args["properties"]["color"]
    assert args["properties"]["note"]["maxLength"] == 50
    assert args["additionalProperties"] is False
    assert tool == original  # the caller's tool dicts are not mutated


def test_forcing_needs_tools() -> None:
    with pytest.raises(ForcingError):
        forced_response_format([])


def test_a_controlflow_completion_tool_with_a_pydantic_result_is_forced() -> None:
    import controlflow as cf
    from controlflow.tools.tools import as_lc_tools
    from langchain_core.utils.function_calling import convert_to_openai_tool

    task = cf.Task("Who?", result_type=Team)
    tools = [convert_to_openai_tool(t) for t in as_lc_tools(task.get_completion_tools())]
    schema = forced_response_format(tools)["json_schema"]["schema"]
    text = json.dumps(schema)
    assert "#/$defs/Person" in text and "Person" in schema["$defs"]
    assert schema["$defs"]["Person"]["properties"]["friends"]["maxItems"] == 10
    assert "\"$defs\":" not in json.dumps(schema["anyOf"])  # only at the root, where $ref resolves


def test_parse_reads_a_forced_call() -> None:
    parsed = parse_forced_output('{"name": "paint", "arguments": {"color": "red"}}', ["paint"])
    assert parsed.ok and parsed.name == "paint" and parsed.args == {"color": "red"}


def test_parse_accepts_fences_tags_and_double_encoded_arguments() -> None:
    assert parse_forced_output('```json\n{"name": "paint", "arguments": {}}\n```', ["paint"]).ok
    assert parse_forced_output('<tool_call>\n{"name": "paint", "arguments": {}}', ["paint"]).ok
    parsed = parse_forced_output('{"name": "paint", "arguments": "{\\"color\\": \\"red\\"}"}', ["paint"])
    assert parsed.args == {"color": "red"}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"name": "paint", "arguments": {"color": "re', "not valid JSON"),
        ('{"name": "teleport", "arguments": {}}', "Unknown tool"),
        ('["paint"]', "not an object"),
        ('{"name": "paint", "arguments": [1]}', "not a JSON object"),
        ("", "not valid JSON"),
    ],
)
def test_parse_reports_bad_output_without_raising(text: str, error: str) -> None:
    parsed = parse_forced_output(text, ["paint"])
    assert not parsed.ok and error in (parsed.error or "")


# --------------------------------------------------------------------------- the proxy


def test_tool_history_is_rewritten_as_plain_chat() -> None:
    messages = [
        {"role": "user", "content": "paint it"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "paint", "arguments": '{"color": "red"}'}},
            {"id": "c2", "type": "function", "function": {"name": "look", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "red wall"}]},
    ]
    flat = flatten_tool_messages(messages)
    assert [m["role"] for m in flat] == ["user", "assistant", "user"]
    assert json.loads(flat[1]["content"].splitlines()[0]) == {"name": "paint", "arguments": {"color": "red"}}
    assert flat[2]["content"] == "Result of paint: done\nResult of look: red wall"


CF_SYSTEM = f"""# Agent

Your name is local.

# Active Tasks

The following tasks are active:

<Task ID ab12cd34>
    - id: ab12cd34
- objective: What is 2 + 3?
</Task>


Only agents assigned to a task are able to mark the task as complete.

## Subtask hierarchy

- ab12cd34 (RUNNING)(active)

# Tools

The following tools have additional instructions:

## Tool: {SUCCESS_NAME}
Use this tool to mark the task as successful.
"""


def test_controlflow_task_text_moves_after_the_shared_prefix() -> None:
    stable, tail = split_volatile(CF_SYSTEM)
    assert "ab12cd34" not in stable and "2 + 3" not in stable
    assert "Only agents assigned" in stable and "Your name is local." in stable
    assert tail == "Question: What is 2 + 3?"  # lean: no ids, agent lists or subtask tree; a question as one
    assert split_volatile("You are helpful.") == ("You are helpful.", "")


def test_a_dropped_section_leaves_the_prompt_with_its_subsections_and_the_task_stays(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOREMAN_LOCAL_PROMPT_DROP", "active tasks, Tools")
    stable, tail = split_volatile(CF_SYSTEM)
    assert "Only agents assigned" not in stable and f"## Tool: {SUCCESS_NAME}" not in stable
    assert "Your name is local." in stable and tail == "Question: What is 2 + 3?"


def test_without_lean_mode_the_task_text_is_moved_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    from foreman.agents import local_prompts

    monkeypatch.setattr(local_prompts, "LEAN_TASK_TAIL", False)
    _, tail = split_volatile(CF_SYSTEM)
    assert "objective: What is 2 + 3?" in tail and f"## Tool: {SUCCESS_NAME}" in tail


def test_forced_request_has_a_schema_and_no_tool_fields() -> None:
    body = {
        "model": "m", "messages": [{"role": "system", "content": CF_SYSTEM}, {"role": "user", "content": "go"}],
        "tools": [SUCCESS, FAILED], "tool_choice": "auto", "parallel_tool_calls": False,
        "stream": True, "stream_options": {"include_usage": True},
        "max_completion_tokens": 64, "temperature": 0.3,
    }
    upstream, names = build_upstream_body(body)
    assert names == ["final_answer", "give_up"]  # ControlFlow's completion tools, shown under neutral names
    for key in ("tools", "tool_choice", "parallel_tool_calls", "stream_options", "max_completion_tokens"):
        assert key not in upstream
    assert upstream["stream"] is False and upstream["max_tokens"] == 64 and upstream["temperature"] == 0.3
    assert upstream["response_format"]["type"] == "json_schema"
    assert "mark_task" not in json.dumps(upstream["response_format"])
    # shared text first; the task and the tool list just before the latest user turn
    roles = [m["role"] for m in upstream["messages"]]
    assert roles == ["system", "system", "user"]
    assert "ab12cd34" not in upstream["messages"][0]["content"]
    assert "give_up(reason: string)" in upstream["messages"][1]["content"]
    assert "final_answer(answer: integer)" in upstream["messages"][1]["content"]
    assert upstream["messages"][1]["content"].startswith("Question: What is 2 + 3?")


def test_the_orchestrators_starting_task_line_becomes_the_objective() -> None:
    start = ("(The following message is from the orchestrator.)\n\n"
             "Starting task plan (ID ab12cd34) with objective: Is fire cold?")
    plan = plan_upstream({"messages": [{"role": "user", "content": start}], "tools": [SUCCESS, FAILED]})
    assert plan.body["messages"][-1] == {"role": "user", "content": "Is fire cold?"}


def test_completion_aliases_map_back_to_controlflows_names() -> None:
    aliases = CompletionAliases.for_tools([PAINT, SUCCESS, FAILED])
    shown = aliases.shown([PAINT, SUCCESS, FAILED])
    assert [t["function"]["name"] for t in shown] == ["paint", "final_answer", "give_up"]
    assert shown[1]["function"]["parameters"]["required"] == ["answer"]
    answer = {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "final_answer", "arguments": '{"answer": false}'}}]}
    restored = aliases.restore(answer)["tool_calls"][0]["function"]
    assert restored == {"name": SUCCESS_NAME, "arguments": '{"result": false}'}
    # two tasks' completion tools at once keep their ids, so each call says which task it ends
    other = _tool(f"{COMPLETION_PREFIX}ff00ff00{SUCCESS_SUFFIX}", {"type": "object", "properties": {}})
    assert CompletionAliases.for_tools([SUCCESS, other]) is None


def test_with_only_completion_tools_the_model_answers_in_words_first() -> None:
    seen: list[dict] = []
    replies = iter(["Fire is not cold.", '{"name": "final_answer", "arguments": {"answer": false}}'])

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"choices": [{"message": {"content": next(replies)}}]})

    boolean = _tool(SUCCESS_NAME, {"type": "object", "properties": {"result": {"type": "boolean"}},
                                   "required": ["result"]})
    app = create_app("http://llama", "tiny", transport=httpx.MockTransport(handle))
    with TestClient(app) as client:
        reply = client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Is fire cold?"}], "tools": [boolean, FAILED]}).json()
    words, forced = seen
    assert "response_format" not in words and "truthfully" in json.dumps(words["messages"])
    assert forced["messages"][-2] == {"role": "assistant", "content": "Fire is not cold."}
    call = reply["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call == {"name": SUCCESS_NAME, "arguments": '{"result": false}'}


def test_a_yes_or_no_the_words_state_is_the_result_without_a_second_call() -> None:
    seen: list[dict] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"choices": [{"message": {"content": "No, fire is not cold."}}]})

    boolean = _tool(SUCCESS_NAME, {"type": "object", "properties": {"result": {"type": "boolean"}},
                                   "required": ["result"]})
    app = create_app("http://llama", "tiny", transport=httpx.MockTransport(handle))
    with TestClient(app) as client:
        reply = client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Is fire cold?"}], "tools": [boolean, FAILED]}).json()
        assert client.get("/stats").json()["answered_in_words"] == 1
    assert len(seen) == 1 and "response_format" not in seen[0]  # no constrained call to drift in
    call = reply["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call == {"name": SUCCESS_NAME, "arguments": '{"result": false}'}


def test_a_text_result_is_the_words_themselves_in_one_call() -> None:
    seen: list[dict] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"choices": [{"message": {"content": "Paris."}}]})

    text = _tool(SUCCESS_NAME, {"type": "object", "properties": {"result": {"type": "string"}}})
    app = create_app("http://llama", "tiny", transport=httpx.MockTransport(handle))
    with TestClient(app) as client:
        reply = client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Capital of France?"}], "tools": [text, FAILED]}).json()
        assert client.get("/stats").json()["answered_in_words"] == 1
    assert len(seen) == 1 and "response_format" not in seen[0]
    call = reply["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call == {"name": SUCCESS_NAME, "arguments": '{"result": "Paris."}'}


def test_native_mode_sends_the_tools_to_the_models_own_template() -> None:
    seen: list[dict] = []
    native_call = {"id": "c1", "type": "function", "function": {"name": "paint", "arguments": '{"color": "red"}'}}

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"choices": [{"finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None, "tool_calls": [native_call]}}]})

    app = create_app("http://llama", "tiny", tool_mode="native-required", transport=httpx.MockTransport(handle))
    with TestClient(app) as client:
        reply = client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "paint"}], "tools": [PAINT], "stream": True}).text
    assert seen[0]["tools"] == [PAINT] and seen[0]["tool_choice"] == "required"
    assert "response_format" not in seen[0] and seen[0]["stream"] is False
    assert '"name": "paint"' in reply and "data: [DONE]" in reply


def test_work_tools_come_first_until_a_tool_result_arrives() -> None:
    first = {"messages": [{"role": "user", "content": "paint"}], "tools": [SUCCESS, PAINT]}
    assert build_upstream_body(first)[1] == ["paint", "final_answer"]
    after = {**first, "messages": first["messages"] + [
        {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "paint", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]}
    assert build_upstream_body(after)[1] == ["final_answer", "paint"]
    assert last_tool_call(after["messages"]) == ("paint", {})


def test_named_tool_choice_forces_that_tool_and_none_passes_through() -> None:
    body = {"messages": [], "tools": [SUCCESS, PAINT]}
    _, names = build_upstream_body({**body, "tool_choice": {"type": "function", "function": {"name": "paint"}}})
    assert names == ["paint"]
    upstream, names = build_upstream_body({**body, "tool_choice": "none", "stream": True})
    assert names == [] and "response_format" not in upstream and upstream["stream"] is True


def test_unparseable_output_becomes_an_invalid_call_or_plain_text() -> None:
    message, finish, ok = forced_message('{"name": "paint", "arguments": {"color": "re', ["paint"])
    assert not ok and finish == "tool_calls"
    assert message["tool_calls"][0]["function"] == {"name": "paint", "arguments": '{"color": "re'}
    message, finish, ok = forced_message("I refuse", ["paint"])
    assert not ok and finish == "stop" and message["content"] == "I refuse"


def _fake_llama(reply_text: str, seen: list[dict]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200, json={"status": "ok"})
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={
            "id": "chatcmpl-1", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": reply_text}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            "timings": {"prompt_n": 10, "prompt_ms": 50.0, "cache_n": 0, "predicted_n": 5, "predicted_ms": 25.0},
        })
    return httpx.MockTransport(handle)


@pytest.fixture()
def fake_proxy() -> Iterator[tuple[TestClient, list[dict]]]:
    seen: list[dict] = []
    reply = '{"name": "paint", "arguments": {"color": "blue"}}'
    app = create_app("http://llama", "tiny", info={"pid": 1}, transport=_fake_llama(reply, seen))
    with TestClient(app) as client:
        yield client, seen


def test_proxy_answers_openai_tool_calls_streamed_and_not(fake_proxy) -> None:
    client, seen = fake_proxy
    body = {"model": "tiny", "messages": [{"role": "user", "content": "paint it blue"}], "tools": [PAINT]}
    data = client.post("/v1/chat/completions", json=body).json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"color": "blue"}
    assert "response_format" in seen[-1] and "tools" not in seen[-1]

    text = client.post("/v1/chat/completions", json={**body, "stream": True,
                                                     "stream_options": {"include_usage": True}}).text
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert events[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "paint"
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert events[-1]["usage"]["total_tokens"] == 15 and text.rstrip().endswith("data: [DONE]")
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny"
    assert client.get("/health").json() == {"status": "ok", "model": "tiny", "pid": 1}
    assert client.get("/stats").json()["forced"] == 2


def test_chatopenai_streams_tool_calls_through_the_proxy(fake_proxy) -> None:
    from langchain_openai import ChatOpenAI

    client, _ = fake_proxy
    model = ChatOpenAI(base_url="http://testserver/v1", api_key="not-needed", model="tiny",
                       http_client=client, streaming=True, stream_usage=True, max_retries=0)

    def paint(color: str) -> str:
        """Paint the wall."""
        return color

    bound = model.bind_tools([paint])
    full = None
    for chunk in bound.stream("paint it blue"):
        full = chunk if full is None else full + chunk
    assert full.tool_calls[0]["name"] == "paint" and full.tool_calls[0]["args"] == {"color": "blue"}
    assert bound.invoke("again").tool_calls[0]["args"] == {"color": "blue"}


def test_an_exact_repeat_of_the_last_call_is_asked_again_without_that_tool() -> None:
    seen: list[dict] = []
    replies = iter(['{"name": "paint", "arguments": {"color": "red"}}',
                    "The wall is now red.",  # asked again without paint: only finishing is left, words first
                    json.dumps({"name": "final_answer", "arguments": {"answer": 1}})])

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"choices": [{"message": {"content": next(replies)}}]})

    app = create_app("http://llama", "tiny", transport=httpx.MockTransport(handle))
    messages = [
        {"role": "user", "content": "paint it red"},
        {"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "paint", "arguments": '{"color": "red"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]
    with TestClient(app) as client:
        reply = client.post("/v1/chat/completions", json={"messages": messages, "tools": [PAINT, SUCCESS]}).json()
        assert client.get("/stats").json()["repeats_avoided"] == 1
    assert reply["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == SUCCESS_NAME
    assert "paint" not in json.dumps(seen[2]["response_format"])


def test_chatopenai_sees_truncated_json_as_an_invalid_tool_call() -> None:
    from langchain_openai import ChatOpenAI

    app = create_app("http://llama", "tiny", transport=_fake_llama('{"name": "paint", "arguments": {"col', []))
    with TestClient(app) as client:
        model = ChatOpenAI(base_url="http://testserver/v1", api_key="x", model="tiny",
                           http_client=client, max_retries=0)
        reply = model.bind_tools([PAINT]).invoke("paint")
    assert reply.tool_calls == []
    assert reply.invalid_tool_calls[0]["name"] == "paint"


# --------------------------------------------------------------------------- the server


def test_the_tiny_model_is_found_without_importing_its_package(tmp_path: Path) -> None:
    path = bundled_model_path()
    assert path.suffix == ".gguf" and path.is_file()
    assert resolve_model_path(Settings(home=tmp_path, local_model="tiny")) == path


def test_the_default_is_the_catalogue_default_and_says_how_to_pull_it(tmp_path: Path) -> None:
    with pytest.raises(LocalModelError, match=f"foreman model pull {DEFAULT_MODEL}"):
        resolve_model_path(Settings(home=tmp_path))


def test_a_missing_configured_model_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(LocalModelError, match="FOREMAN_LOCAL_MODEL_PATH"):
        resolve_model_path(Settings(local_model_path=tmp_path / "nope.gguf"))


def test_a_different_model_or_fixed_port_needs_another_server(tmp_path: Path) -> None:
    base = ServerConfig(model_path=tmp_path / "a.gguf", ctx=4096, threads=2, port=0)
    running = base.model_copy(update={"port": 5555})
    assert base.same_model_as(running)  # port 0 takes whatever port it runs on
    assert not base.model_copy(update={"model_path": tmp_path / "b.gguf"}).same_model_as(running)
    assert not base.model_copy(update={"port": 6666}).same_model_as(running)


def test_the_description_names_the_model_file_its_source_and_that_it_is_not_running(
    tmp_path: Path,
) -> None:
    from foreman.agents.local import describe_local_model

    common = {"home": tmp_path, "local_ctx": 4096, "local_threads": 2}
    tiny = describe_local_model(Settings(**common, local_model="tiny"))
    assert f"Local model: {bundled_model_path().name} (FOREMAN_LOCAL_MODEL=tiny)" in tiny
    assert "4096 tokens of context, 2 threads for prompts and 1 for generation" in tiny
    assert "not running now; it starts on first use" in tiny
    assert "forced, grammar-constrained" in tiny
    own = tmp_path / "mine.gguf"
    shutil.copyfile(bundled_model_path(), own)
    mine = describe_local_model(Settings(**common, local_model_path=own, local_gen_threads=2))
    assert "Local model: mine.gguf (FOREMAN_LOCAL_MODEL_PATH)" in mine
    assert f"path: {own.resolve()}" in mine and "and 2 for generation" in mine
    missing = describe_local_model(Settings(**common))
    assert "not usable" in missing and f"foreman model pull {DEFAULT_MODEL}" in missing


def test_a_held_state_lock_times_out_with_a_local_model_error(tmp_path: Path) -> None:
    from foreman.agents.local_state import locked

    lock_path = tmp_path / "server.lock"
    # flock locks per open file, so the second `locked` conflicts with the first here too
    with (
        locked(lock_path),
        pytest.raises(LocalModelError, match="Another Foreman process has held") as caught,
        locked(lock_path, timeout_s=0.2),
    ):
        pass
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with locked(lock_path, timeout_s=0.2):  # released: free again
        pass


def test_a_busy_fixed_port_times_out_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from foreman.agents import local_daemon

    monkeypatch.setattr(local_daemon, "PORT_WAIT_S", 0.2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(LocalModelError, match=f"Port {port} .*FOREMAN_LOCAL_PORT") as caught:
            local_daemon._bind(port)
    assert isinstance(caught.value.__cause__, OSError)


# --------------------------------------------------------------------------- slow: real model


def real_models_dir() -> Path:
    """Where install.sh pulled the models: the tests' FOREMAN_HOME is a temporary one."""
    configured = os.environ.get("FOREMAN_LOCAL_MODELS_DIR")
    return Path(configured) if configured else Path.home() / ".foreman" / "models"


@pytest.fixture(scope="module")
def local_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private FOREMAN_HOME for a real server on the tiny model; the server is stopped at the end."""
    from foreman.agents.local_server import stop
    from foreman.settings import reset_settings

    home = tmp_path_factory.mktemp("local-model-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOREMAN_HOME", str(home))
        mp.delenv("FOREMAN_LOCAL_MODEL_PATH", raising=False)
        mp.setenv("FOREMAN_LOCAL_MODEL", TINY_MODEL)  # server mechanics: the model that starts in a second
        mp.setenv("FOREMAN_LOCAL_CTX", "4096")
        reset_settings()
        try:
            yield home
        finally:
            stop(Settings(home=home, local_model=TINY_MODEL))
            reset_settings()


def _ensure_in_child(home: str, queue: multiprocessing.Queue) -> None:
    from foreman.agents.local_server import ensure_running

    queue.put(ensure_running(Settings(home=Path(home), local_ctx=4096, local_model=TINY_MODEL)).pid)


@pytest.mark.slow
def test_real_server_answers_a_forced_tool_call_over_http(local_home: Path) -> None:
    from foreman.agents.local_server import ensure_running, status

    info = ensure_running(Settings(home=local_home, local_model=TINY_MODEL))
    assert info.base_url.startswith("http://127.0.0.1:")
    assert status(Settings(home=local_home, local_model=TINY_MODEL)).running
    body = {"model": info.model_name, "temperature": 0.2, "tools": [PAINT, SUCCESS], "tool_choice": "required",
            "messages": [{"role": "user", "content": "Paint the wall blue."}]}
    for stream in (False, True):
        reply = httpx.post(f"{info.base_url}/chat/completions", json={**body, "stream": stream}, timeout=300)
        assert reply.status_code == 200
        if stream:
            events = [json.loads(x[6:]) for x in reply.text.splitlines() if x.startswith("data: {")]
            call = events[0]["choices"][0]["delta"]["tool_calls"][0]
            args = json.loads(events[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"])
        else:
            call = reply.json()["choices"][0]["message"]["tool_calls"][0]
            args = json.loads(call["function"]["arguments"])
        assert call["function"]["name"] in ("paint", SUCCESS_NAME)
        if call["function"]["name"] == "paint":
            assert args["color"] in ("red", "green", "blue")
        else:
            assert isinstance(args["result"], int)


@pytest.mark.slow
def test_processes_starting_at_once_share_one_server(local_home: Path) -> None:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    children = [context.Process(target=_ensure_in_child, args=(str(local_home), queue)) for _ in range(2)]
    for child in children:
        child.start()
    pids = {queue.get(timeout=300) for _ in children}
    for child in children:
        child.join(timeout=60)
    assert len(pids) == 1


@pytest.mark.slow
def test_another_model_path_restarts_the_server(local_home: Path, tmp_path: Path) -> None:
    from foreman.agents.local_server import ensure_running

    first = ensure_running(Settings(home=local_home, local_ctx=4096, local_model=TINY_MODEL))
    copy_path = tmp_path / "other.gguf"
    shutil.copyfile(bundled_model_path(), copy_path)
    second = ensure_running(Settings(home=local_home, local_ctx=4096, local_model_path=copy_path))
    assert second.pid != first.pid and second.model_path == copy_path.resolve()
    assert second.model_name == "other"


@pytest.mark.slow
def test_controlflow_tasks_run_end_to_end_on_the_default_model(
    tmp_path: Path, prefect_server: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one test on the real default model (pulled by install.sh): right answers, False included."""
    # Foreman first: it makes ControlFlow and Prefect offline-safe before they load.
    import foreman  # noqa: F401, I001
    import controlflow as cf
    import prefect

    from foreman.agents.local import describe_local_model, local_chat_model
    from foreman.agents.local_server import status, stop
    from foreman.settings import get_settings, reset_settings

    for name in ("FOREMAN_LOCAL_MODEL", "FOREMAN_LOCAL_MODEL_PATH", "FOREMAN_LOCAL_TOOL_CALLS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FOREMAN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FOREMAN_LOCAL_MODELS_DIR", str(real_models_dir()))
    reset_settings()
    settings = get_settings()
    try:
        agent = cf.Agent(name="local", model=local_chat_model(settings))

        @prefect.flow
        def ask() -> list[cf.Task]:
            tasks = [cf.Task("What is 2 + 3?", result_type=int, agents=[agent], max_llm_calls=4),
                     cf.Task("Is 2 greater than 5?", result_type=bool, agents=[agent], max_llm_calls=4)]
            for task in tasks:
                task.run(raise_on_failure=False)
            return tasks

        add, compare = ask()
        # Each task must end by a completion call the model made through the proxy (a broken
        # proxy would let ControlFlow fail it with its out-of-calls reason instead).
        for task in (add, compare):
            assert task.is_successful(), (task.status, task.result)
        assert add.result == 5
        # issue #11: through the forcing path every boolean was True. This is the question the
        # 1.5B answers "no" to in every run measured; "Is fire cold?" it still gets wrong in
        # some contexts (bench/local_model.py tracks those).
        assert compare.result is False
        running = status(settings)
        assert running.running and running.info is not None
        described = describe_local_model(settings)
        assert f"(the default, {DEFAULT_MODEL})" in described
        assert f"served at {running.info.base_url} (pid {running.info.pid}," in described
    finally:
        stop(settings)
        reset_settings()


@pytest.mark.slow
def test_an_idle_server_stops_itself_and_clears_its_state(tmp_path: Path) -> None:
    import time

    from foreman.agents.local_server import ensure_running, status

    settings = Settings(home=tmp_path / "home", local_ctx=2048, local_idle_minutes=0.02, local_model=TINY_MODEL)
    info = ensure_running(settings)
    deadline = time.monotonic() + 60
    while status(settings).running and time.monotonic() < deadline:
        time.sleep(1)
    assert not status(settings).running
    assert not (tmp_path / "home" / "local-model" / "server.json").exists()
    assert "Idle for" in info.log_path.read_text()


@pytest.mark.parametrize(("words", "schema", "value"), [
    ("No, fire is not cold.", {"type": "boolean"}, False),  # the answer the record call turned into true
    ("Yes, on a clear day.", {"type": "boolean"}, True),
    ("2 + 3 = 5", {"type": "integer"}, 5),
    ("A dog has 4 legs.", {"type": "integer"}, 4),
    ("Half of 3 is 1.5.", {"type": "number"}, 1.5),
    ("An elephant is large.", {"enum": ["small", "large"]}, "large"),
])
def test_a_typed_answer_the_words_state_is_read_by_python(words: str, schema: dict, value: object) -> None:
    from foreman.agents.local_answer import value_from_words

    assert value_from_words(words, schema) == value
    assert type(value_from_words(words, schema)) is type(value)


@pytest.mark.parametrize(("words", "schema"), [
    ("Fire is hot.", {"type": "boolean"}),  # no yes/no: the constrained call decides
    ("between 3 and 4", {"type": "integer"}),
    ("1.5", {"type": "integer"}),
    ("not small but large", {"enum": ["small", "large"]}),
    ("red, yellow, blue", {"type": "array", "items": {"type": "string"}}),
])
def test_words_that_do_not_state_one_value_go_to_the_recording_call(words: str, schema: dict) -> None:
    from foreman.agents.local_answer import UNREAD, value_from_words

    assert value_from_words(words, schema) is UNREAD


def test_native_requests_merge_an_agents_text_and_its_call_into_one_assistant_turn() -> None:
    from foreman.agents.local_request import merge_assistant_runs

    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
    merged = merge_assistant_runs([
        {"role": "user", "content": "Add 2 and 3."},
        {"role": "assistant", "content": "I will add them."},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "5"},
    ])
    assert [m["role"] for m in merged] == ["user", "assistant", "tool"]
    assert merged[1]["content"] == "I will add them." and merged[1]["tool_calls"] == [call]


def test_the_idle_clock_restarts_when_a_long_answer_is_ready() -> None:
    import time

    touched: list[float] = []
    answered: list[float] = []

    def handle(request: httpx.Request) -> httpx.Response:
        time.sleep(0.3)  # a long generation
        answered.append(time.monotonic())
        return httpx.Response(200, json={"choices": [{"message": {"content": "Paris."}}]})

    text = _tool(SUCCESS_NAME, {"type": "object", "properties": {"result": {"type": "string"}}})
    app = create_app("http://llama", "tiny", transport=httpx.MockTransport(handle),
                     on_request=lambda: touched.append(time.monotonic()))
    with TestClient(app) as client:
        client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Capital of France?"}], "tools": [text, FAILED]})
    assert touched[0] < answered[0] <= touched[-1], "touched when it started and again when it was answered"
