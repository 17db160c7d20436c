"""A hosted provider that fails, hangs or dies mid-response: the model call is retried, the step is not.

The provider is a real local HTTP server speaking the OpenAI chat-completions protocol
(`bench.load.FakeProvider`, used as `openai-compatible/<model>` with FOREMAN_BASE_URL),
scripted to fail the first calls. What retries is the openai client under langchain-openai:
429, 5xx, timeouts (FOREMAN_MODEL_TIMEOUT_S, 120 s by default) and a connection dropped
before the answer was read, up to its max_retries (2), honouring Retry-After. Foreman
makes hosted calls whole (not streamed) so that a dropped answer is one of those: only the
model call is repeated, never the step's earlier tool calls.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from foreman.settings import Settings, reset_settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.load import FakeProvider


@pytest.fixture()
def provider(request: pytest.FixtureRequest) -> Iterator[FakeProvider]:
    server = FakeProvider(request.param).start()
    yield server
    server.stop()


def hosted(provider: FakeProvider, **settings: object) -> Settings:
    base = Settings(model="openai-compatible/fake", base_url=provider.url, api_key="k")
    return base.model_copy(update=settings) if settings else base


def model_for(provider: FakeProvider, **settings: object):
    from foreman.agents.models import build_chat_model

    return build_chat_model(hosted(provider, **settings))


@pytest.mark.parametrize("provider", [[(429, {"retry-after": "1.5"}), (500, {})]], indirect=True)
def test_429_with_retry_after_then_500_are_retried_and_the_answer_arrives(provider: FakeProvider) -> None:
    reply = model_for(provider).invoke("ping")
    assert reply.content == "pong"
    assert len(provider.arrivals) == 3  # two failures, one answer
    assert provider.arrivals[1] - provider.arrivals[0] >= 1.4  # waited as long as Retry-After asked


@pytest.mark.parametrize("provider", [["slow"]], indirect=True)
def test_a_call_past_the_model_timeout_is_abandoned_and_retried(provider: FakeProvider) -> None:
    from foreman.settings import Settings

    assert model_for(provider).request_timeout == Settings().model_timeout_s == 120  # not openai's 600 s
    model = model_for(provider, model_timeout_s=1.0)
    assert model.request_timeout == 1.0
    assert model.invoke("ping").content == "pong"  # the first call hangs 3 s: given up at 1 s, retried
    assert len(provider.arrivals) == 2
    assert provider.arrivals[1] - provider.arrivals[0] < 2.9  # the retry did not wait for the hung call


@pytest.mark.parametrize("provider", [[(503, {})] * 5], indirect=True)
def test_a_provider_that_keeps_failing_ends_in_one_error_after_the_retries(provider: FakeProvider) -> None:
    import openai

    with pytest.raises(openai.InternalServerError):
        model_for(provider).invoke("ping")
    assert len(provider.arrivals) == 3  # the first call and the client's two retries, then it stops


@pytest.mark.parametrize("provider", [["drop"]], indirect=True)
def test_a_model_server_that_dies_mid_response_is_asked_again(provider: FakeProvider) -> None:
    model = model_for(provider)
    assert "".join(str(chunk.content) for chunk in model.stream("ping")) == "pong"  # ControlFlow streams
    assert provider.dropped == 1 and len(provider.arrivals) == 2


STEP_E = """\
name: told
params:
  tag: {type: str, default: t1}
steps:
  - {id: e, agent: generalist, retries: 0,
     instructions: "Tell the user that run ${tag} is done. [[run ${tag} step e]]"}
"""


@pytest.mark.parametrize("provider", [[None, "drop"]], indirect=True)
@pytest.mark.usefixtures("prefect_server")
def test_an_agent_step_whose_model_dies_after_a_tool_call_notifies_once_and_completes(
        provider: FakeProvider, foreman_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Turn 1 calls notify_user (a side effect); the answer to turn 2 is cut off half-way."""
    from foreman.flows.workflow import run_workflow
    from foreman.tools.audit import AuditLog

    path = tmp_path / "told" / "workflow.yaml"
    path.parent.mkdir()
    path.write_text(STEP_E)
    monkeypatch.setenv("FOREMAN_MODEL", "openai-compatible/fake")
    monkeypatch.setenv("FOREMAN_BASE_URL", provider.url)
    monkeypatch.setenv("FOREMAN_API_KEY", "k")
    reset_settings()
    result = run_workflow(path=str(path), ground=False)
    assert result.status == "COMPLETED", result
    assert result.results["e"] == "done t1 e"
    assert provider.dropped == 1 and len(provider.arrivals) == 3  # notify, the cut-off answer, the same call again
    assert result.llm_calls == 2  # ControlFlow saw two model calls: the retry was inside one
    told = [r for r in AuditLog(foreman_home / "audit.sqlite3").for_run(result.run_key) if r.tool == "notify_user"]
    assert [(r.outcome, r.arguments["message"]) for r in told] == [("ok", "run t1 step e: all good")]  # once
