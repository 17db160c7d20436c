"""A hosted provider that answers 429 / 500 / slowly: Foreman's model client retries with backoff and Retry-After.

The provider is a real local HTTP server speaking the OpenAI chat-completions protocol
(`openai-compatible/<model>` with FOREMAN_BASE_URL), scripted to fail the first calls.
What retries is the openai client under langchain-openai (Foreman adds no retry loop of
its own): 429, 5xx and timeouts, up to its max_retries (2), honouring Retry-After.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from foreman.settings import Settings


def completion(text: str) -> bytes:
    return json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": "fake",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }).encode()


class FakeProvider(ThreadingHTTPServer):
    """Answers each POST with the next scripted fault, then with a completion; records arrival times."""

    def __init__(self, faults: list[tuple[int, dict[str, str]] | str]) -> None:
        self.faults = list(faults)
        self.arrivals: list[float] = []
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    server: FakeProvider

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.arrivals.append(time.monotonic())
        fault = self.server.faults.pop(0) if self.server.faults else None
        if fault == "slow":
            time.sleep(3)  # past the client's timeout: it gives up on this attempt and retries
            fault = None
        status, headers = fault if isinstance(fault, tuple) else (200, {})
        body = completion("pong") if status == 200 else json.dumps({"error": {"message": "busy"}}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:
            pass


@pytest.fixture()
def provider(request: pytest.FixtureRequest) -> Iterator[FakeProvider]:
    server = FakeProvider(request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def model_for(provider: FakeProvider, **extra: object):
    from foreman.agents.models import build_chat_model

    settings = Settings(model="openai-compatible/fake", base_url=provider.url, api_key="k")
    model = build_chat_model(settings)
    return model.model_copy(update=extra) if extra else model


@pytest.mark.parametrize("provider", [[(429, {"retry-after": "1.5"}), (500, {})]], indirect=True)
def test_429_with_retry_after_then_500_are_retried_and_the_answer_arrives(provider: FakeProvider) -> None:
    reply = model_for(provider).invoke("ping")
    assert reply.content == "pong"
    assert len(provider.arrivals) == 3  # two failures, one answer
    assert provider.arrivals[1] - provider.arrivals[0] >= 1.4  # waited as long as Retry-After asked


@pytest.mark.parametrize("provider", [["slow"]], indirect=True)
def test_a_call_that_times_out_is_retried(provider: FakeProvider) -> None:
    from langchain_openai import ChatOpenAI

    model = model_for(provider)
    assert isinstance(model, ChatOpenAI)
    timed = ChatOpenAI(model="fake", base_url=provider.url, api_key="k", timeout=1.0)
    assert timed.invoke("ping").content == "pong"
    assert len(provider.arrivals) == 2


@pytest.mark.parametrize("provider", [[(503, {})] * 5], indirect=True)
def test_a_provider_that_keeps_failing_ends_in_one_error_after_the_retries(provider: FakeProvider) -> None:
    import openai

    with pytest.raises(openai.InternalServerError):
        model_for(provider).invoke("ping")
    assert len(provider.arrivals) == 3  # the first call and the client's two retries, then it stops
