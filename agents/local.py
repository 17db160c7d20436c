"""The local model as a LangChain chat model: a real LLM with no key and no network.

`local_chat_model(settings)` makes sure the shared embedded server runs
(`agents/local_server.py`, serving the catalogue model chosen in `agents/model_store.py`)
and returns a plain `ChatOpenAI` pointed at its forcing proxy (`agents/local_proxy.py`),
whose transport starts the server again if it dies mid-call (`agents/local_transport.py`). Because the proxy turns every tool-bearing request
into one grammar-constrained tool call, ControlFlow's agents work unmodified: each turn
ends in a valid call to one of the tools ControlFlow bound (at least the task's
completion tools, `foreman/cf_adapter/names.py`), streamed the way ControlFlow consumes it.
"""

from __future__ import annotations

import httpx
from langchain_core.language_models import BaseChatModel

from foreman.agents.local_server import (
    LocalServerInfo,
    config_for,
    ensure_running,
    generation_threads,
    run_server,
    status,
)
from foreman.agents.local_transport import AsyncRestartingTransport, RestartingTransport
from foreman.errors import LocalModelError
from foreman.settings import Settings, get_settings

# Used when FOREMAN_TEMPERATURE is unset. A 135M model at llama.cpp's default 0.8 picks
# wrong tools and arguments more often; fully greedy decoding loops on digits. Measured
# with bench/local_model.py on SmolLM2 (tiny), kept for the catalogue models.
LOCAL_DEFAULT_TEMPERATURE = 0.2
# Per-call token cap when FOREMAN_MAX_TOKENS is unset: a tool call is short, a looping
# one is cut before it costs more than ~10 s.
LOCAL_DEFAULT_MAX_TOKENS = 512
REQUEST_TIMEOUT_S = 600.0


def local_chat_model(settings: Settings | None = None) -> BaseChatModel:
    """A ChatOpenAI on the embedded server (started if it is not running)."""
    from langchain_openai import ChatOpenAI

    settings = settings or get_settings()
    info = ensure_running(settings)
    temperature = settings.temperature

    def restart() -> str:  # the server died under a call: start it again, wherever it listens now
        return ensure_running(settings).base_url

    return ChatOpenAI(
        base_url=info.base_url,
        api_key="not-needed",
        model=info.model_name,
        temperature=LOCAL_DEFAULT_TEMPERATURE if temperature is None else temperature,
        max_tokens=settings.max_tokens or LOCAL_DEFAULT_MAX_TOKENS,
        streaming=True,  # ControlFlow calls .stream(); the proxy streams tool calls too
        stream_usage=True,
        timeout=REQUEST_TIMEOUT_S,
        max_retries=1,
        http_client=httpx.Client(transport=RestartingTransport(restart), timeout=REQUEST_TIMEOUT_S),
        http_async_client=httpx.AsyncClient(transport=AsyncRestartingTransport(restart), timeout=REQUEST_TIMEOUT_S),
    )


def describe_local_model(settings: Settings | None = None) -> str:
    """Which model runs locally, where, how its tool calls are made, and how to switch."""
    from foreman.agents.model_store import describe_source

    settings = settings or get_settings()
    try:
        config = config_for(settings)
    except LocalModelError as exc:  # shown, not raised: `foreman model` is how you find out
        return f"Local model: not usable: {exc}"
    current = status(settings)
    if current.running and current.info is not None:
        where = f"served at {current.info.base_url} (pid {current.info.pid}, log {current.info.log_path})"
    else:
        where = "not running now; it starts on first use and stops after "
        where += f"{settings.local_idle_minutes:g} idle minutes"
    calls = {
        "forced": "Every call with tools is a forced, grammar-constrained tool call, so it is always valid.",
        "native": "Tool calls use the model's own chat template and llama.cpp's parser (tool_choice as sent).",
        "native-required": "Tool calls use the model's own chat template, with tool_choice required.",
    }[config.tool_mode]
    return "\n".join(
        [
            f"Local model: {config.model_path.name} ({describe_source(settings)})",
            f"  path: {config.model_path}",
            (
                f"  llama.cpp, {config.ctx} tokens of context, {config.threads} threads for prompts "
                f"and {generation_threads(config)} for generation; {where}."
            ),
            f"  {calls}",
            "Other local models: foreman model list; any GGUF: FOREMAN_LOCAL_MODEL_PATH=/path/to/model.gguf",
            (
                "Use a hosted model: FOREMAN_MODEL=openai/gpt-4o-mini with OPENAI_API_KEY, or "
                "FOREMAN_MODEL=anthropic/claude-3-5-haiku-latest with ANTHROPIC_API_KEY, or "
                "FOREMAN_MODEL=openai-compatible/<model> with FOREMAN_BASE_URL (and FOREMAN_API_KEY)."
            ),
        ]
    )


def serve_forever(settings: Settings | None = None) -> None:
    """Serve the local model in the foreground until Ctrl-C (`foreman model serve`).

    Stops a background server first, so there is one server and its state file names
    this process; other runs then reuse it. No idle shutdown in the foreground.
    """
    from foreman.agents.local_server import stop

    settings = settings or get_settings()
    stop(settings)
    run_server(config_for(settings), settings.home, idle_minutes=0.0)


__all__ = [
    "LocalServerInfo",
    "describe_local_model",
    "ensure_running",
    "local_chat_model",
    "serve_forever",
]
