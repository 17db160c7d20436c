"""Level 1: named agents and the one model setting, with errors that say what to do."""

from __future__ import annotations

from enum import Enum
from typing import Literal

import controlflow as cf
import pytest
from prefect import flow
from pydantic import BaseModel

from foreman.agents.models import ModelConfigError, ModelSettings, build_chat_model, parse_model
from foreman.agents.registry import AgentSpec, UnknownAgentError, build_agent, registry
from foreman.agents.scripted import ScriptedChatModel, ScriptedReply, succeed, succeed_model
from foreman.cf_adapter.taskrun import run_task
from foreman.settings import Settings
from foreman.tools.catalog import ToolEnv, UnknownToolError


def test_registry_has_the_named_agents_with_their_agent_level_tools() -> None:
    assert {"generalist", "researcher", "coder", "writer"} <= set(registry.names())
    assert "read_file" in registry.get("researcher").tools
    assert "fetch_url" in registry.get("researcher").tools
    assert registry.get("coder").tools == ["run_python"]
    assert registry.get("coder").model.temperature == 0.0


def test_unknown_agent_lists_the_known_ones() -> None:
    with pytest.raises(UnknownAgentError) as info:
        registry.get("wizard")
    assert "wizard" in str(info.value)
    assert "researcher" in str(info.value) and "coder" in str(info.value)


def test_agent_with_unknown_tool_is_refused_at_registration() -> None:
    with pytest.raises(UnknownToolError, match="known tools: .*read_file"):
        registry.register(AgentSpec(name="bad", description="d", instructions="i", tools=["teleport"]))
    assert "bad" not in registry.names()


@pytest.mark.parametrize(
    ("spec", "var"),
    [("openai/gpt-4o-mini", "OPENAI_API_KEY"), ("anthropic/claude-3-5-haiku-latest", "ANTHROPIC_API_KEY")],
)
def test_hosted_model_without_key_names_the_variable(
    spec: str, var: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(var, raising=False)
    with pytest.raises(ModelConfigError, match=var):
        build_chat_model(Settings(model=spec))


def test_unknown_provider_lists_supported_ones() -> None:
    with pytest.raises(ModelConfigError, match="supported: local, openai, anthropic, ollama, openai-compatible"):
        parse_model("mistral/large")


def test_openai_compatible_needs_base_url() -> None:
    with pytest.raises(ModelConfigError, match="FOREMAN_BASE_URL"):
        build_chat_model(Settings(model="openai-compatible/qwen"))


def test_agent_model_settings_override_global_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    settings = Settings(model="openai/gpt-4o-mini", temperature=0.2, max_tokens=100)
    model = build_chat_model(settings, ModelSettings(temperature=0.9))
    assert model.temperature == 0.9
    assert model.max_tokens == 100
    assert model.model_name == "gpt-4o-mini"


def test_ollama_and_compatible_endpoints_use_their_base_urls() -> None:
    ollama = build_chat_model(Settings(model="ollama/llama3.2", ollama_base_url="http://127.0.0.1:11434"))
    assert str(ollama.openai_api_base).startswith("http://127.0.0.1:11434/v1")
    compatible = build_chat_model(
        Settings(model="openai-compatible/qwen2", base_url="http://127.0.0.1:9000/v1")
    )
    assert compatible.openai_api_base == "http://127.0.0.1:9000/v1"


def test_built_agent_carries_prompt_and_tools(foreman_home, workspace) -> None:
    env = ToolEnv.from_settings(workspace=workspace)
    agent = build_agent("researcher", env, model=ScriptedChatModel())
    assert agent.name == "researcher"
    assert "research" in agent.instructions
    assert [t.name for t in agent.tools] == ["search_knowledge", "list_files", "read_file", "search_files", "fetch_url"]
    # a tiny model cannot invent a path: read_file's schema lists the real ones
    read = next(t for t in agent.tools if t.name == "read_file")
    assert "meeting_notes.txt" in read.parameters["properties"]["path"]["enum"]


class Color(Enum):
    RED = "red"
    BLUE = "blue"


class Verdict(BaseModel):
    ok: bool
    reason: str


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize(
    ("result_type", "reply", "expected"),
    [
        (["red", "blue"], 1, "blue"),  # list of choices: ControlFlow's Labels, fixed by foreman.compat
        (("low", "high"), 0, "low"),
        (Literal["yes", "no"], 1, "no"),
        (Color, "red", Color.RED),
        (Verdict, succeed_model(ok=True, reason="fine"), Verdict(ok=True, reason="fine")),
    ],
)
def test_choice_and_structured_results_run_inside_prefect(
    foreman_home, result_type, reply, expected
) -> None:
    model = ScriptedChatModel(replies=[reply if isinstance(reply, ScriptedReply) else succeed(reply)])

    @flow
    def choose():
        task = cf.Task("choose", result_type=result_type, agents=[cf.Agent(name="a", model=model)])
        return run_task(task, audit=ToolEnv.from_settings().audit)

    assert choose() == expected


@pytest.mark.usefixtures("prefect_server")
def test_task_that_succeeds_on_its_last_allowed_call_stays_successful(foreman_home) -> None:
    model = ScriptedChatModel(replies=[ScriptedReply(content="thinking"), succeed(7)])

    @flow
    def last_call():
        task = cf.Task("count", result_type=int, agents=[cf.Agent(name="a", model=model)])
        return run_task(task, audit=ToolEnv.from_settings().audit, max_llm_calls=2), task.status.value

    assert last_call() == (7, "SUCCESSFUL")


def test_the_model_line_names_the_local_catalogue_model_and_never_raises(tmp_path) -> None:
    from foreman.agents.model_store import selection_path
    from foreman.agents.models import describe_model

    settings = Settings(home=tmp_path, model="local", local_model="qwen2.5-coder-0.5b")
    assert "serving qwen2.5-coder-0.5b (catalogue)" in describe_model(settings)
    path = selection_path(Settings(home=tmp_path))
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert "selection is unreadable" in describe_model(Settings(home=tmp_path, model="local"))
