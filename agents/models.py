"""Turn Foreman's one model setting into a LangChain chat model.

`FOREMAN_MODEL` picks the provider and model (`local`, `openai/<model>`,
`anthropic/<model>`, `ollama/<model>`, `openai-compatible/<model>`); temperature and
max tokens come from the settings or from an agent's own model settings. A hosted
provider without its key fails here, before any run starts, naming the variable.

Faults on a hosted provider are retried by its client library (openai / anthropic, 2
retries with backoff, honouring Retry-After): 429, 5xx, a connection refused or dropped,
and a call that takes longer than `FOREMAN_MODEL_TIMEOUT_S` (default 120 s; the libraries'
own default is 600 s, ten minutes of a run hanging on a provider that stopped answering).
A hosted call is made whole, not streamed: the client retries a call only until the
response has been read, and a stream that breaks half-way would otherwise fail the whole
step, whose retry runs its earlier tool calls again (a file written twice, a
notification sent twice). Only the model call is repeated; the step's history stays.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, Field

from foreman.errors import ForemanError, ModelConfigError
from foreman.settings import Settings

Provider = Literal["local", "openai", "anthropic", "ollama", "openai-compatible"]
PROVIDERS: tuple[str, ...] = ("local", "openai", "anthropic", "ollama", "openai-compatible")
KEY_VARS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


_override: BaseChatModel | None = None


@contextmanager
def use_model(model: BaseChatModel) -> Iterator[BaseChatModel]:
    """Make every agent built inside this block use `model` (tests, benchmarks).

    Process-wide on purpose: Prefect runs task bodies in worker threads, which a
    context variable set here would not reach.
    """
    global _override
    previous, _override = _override, model
    try:
        yield model
    finally:
        _override = previous


def uses_embedded_model(settings: Settings) -> bool:
    """True when agents will talk to the embedded llama.cpp model (not an override, not hosted)."""
    return _override is None and parse_model(settings.model).provider == "local"




class ModelSettings(BaseModel):
    """Level 1 settings an agent may pin for itself; unset fields fall back to FOREMAN_*."""

    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, gt=0)


class ModelChoice(BaseModel):
    provider: Provider
    name: str


def parse_model(spec: str) -> ModelChoice:
    """`'openai/gpt-4o-mini'` -> provider and model name; `'local'` alone is allowed."""
    spec = spec.strip()
    if spec == "local":
        return ModelChoice(provider="local", name="embedded")
    provider, sep, name = spec.partition("/")
    if provider not in PROVIDERS:
        raise ModelConfigError(
            f"unknown model provider {provider!r} in FOREMAN_MODEL={spec!r}; "
            f"supported: {', '.join(PROVIDERS)} (e.g. 'openai/gpt-4o-mini', 'local')"
        )
    if provider != "local" and (not sep or not name):
        raise ModelConfigError(
            f"FOREMAN_MODEL={spec!r} names no model; write it as '{provider}/<model name>'"
        )
    return ModelChoice(provider=provider, name=name or "embedded")


def check_model_settings(settings: Settings) -> ModelChoice:
    """Fail fast, naming the variable to set, when the chosen model cannot be reached."""
    choice = parse_model(settings.model)
    key_var = KEY_VARS.get(choice.provider)
    if key_var and not os.environ.get(key_var):
        raise ModelConfigError(
            f"FOREMAN_MODEL={settings.model!r} needs an API key: set {key_var}, "
            "or use the embedded model with FOREMAN_MODEL=local"
        )
    if choice.provider == "openai-compatible" and not settings.base_url:
        raise ModelConfigError(
            f"FOREMAN_MODEL={settings.model!r} needs the endpoint: set FOREMAN_BASE_URL "
            "(e.g. http://127.0.0.1:8000/v1) and, if it needs one, FOREMAN_API_KEY"
        )
    return choice


def model_timeout_s(settings: Settings) -> float:
    """Seconds one hosted model call may take before the client abandons it and retries."""
    return settings.model_timeout_s


def build_chat_model(settings: Settings, overrides: ModelSettings | None = None) -> BaseChatModel:
    """The chat model for one agent: the global choice plus that agent's own settings."""
    if _override is not None:
        return _override
    choice = check_model_settings(settings)
    temperature = overrides.temperature if overrides and overrides.temperature is not None else settings.temperature
    max_tokens = overrides.max_tokens if overrides and overrides.max_tokens is not None else settings.max_tokens
    # whole calls with a deadline, so the client's retries cover a dropped or hanging call
    common: dict = {"timeout": model_timeout_s(settings), "disable_streaming": True}
    if temperature is not None:
        common["temperature"] = temperature
    if max_tokens is not None:
        common["max_tokens"] = max_tokens

    if choice.provider == "local":
        from foreman.agents.local import local_chat_model

        return local_chat_model(
            settings.model_copy(update={"temperature": temperature, "max_tokens": max_tokens})
        )
    if choice.provider == "anthropic":
        from langchain_anthropic import ChatAnthropic

        return ChatAnthropic(model=choice.name, **common)

    from langchain_openai import ChatOpenAI

    if choice.provider == "openai":
        return ChatOpenAI(model=choice.name, **common)
    if choice.provider == "ollama":
        # Ollama speaks the OpenAI protocol at /v1; no extra client library needed.
        return ChatOpenAI(
            model=choice.name,
            base_url=settings.ollama_base_url.rstrip("/") + "/v1",
            api_key="ollama",
            **common,
        )
    return ChatOpenAI(
        model=choice.name, base_url=settings.base_url, api_key=settings.api_key or "none", **common
    )


def _local_label(settings: Settings) -> str:
    """The local model in a few words; never raises (this line heads every run)."""
    if settings.local_model_path:
        return str(settings.local_model_path)
    from foreman.agents.model_store import selected_name

    try:
        return f"{selected_name(settings)} (catalogue)"
    except ForemanError as exc:
        return f"(the model selection is unreadable: {exc})"


def redacted_url(url: str) -> str:
    """`url` as it may be printed or logged: a password in it (`https://user:secret@host`) and
    secret-looking query values (`?api_key=…`, `token=…`) become `***`."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = re.sub(r"(?i)\b((?:api[_-]?)?key|token|secret|password|passwd|auth\w*|sig\w*)=([^&]+)", r"\1=***",
                   parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def describe_model(settings: Settings) -> str:
    """One line for every run: which model, and how to switch."""
    choice = parse_model(settings.model)
    if choice.provider == "local":
        return (
            f"model: embedded llama.cpp serving {_local_label(settings)}. Switch with "
            "`foreman model use NAME` (`foreman model list`), FOREMAN_LOCAL_MODEL_PATH=/path/to/model.gguf, "
            "FOREMAN_MODEL=openai/gpt-4o-mini (+OPENAI_API_KEY), anthropic/<model> (+ANTHROPIC_API_KEY) "
            "or ollama/<model>"
        )
    where = {
        "openai": "api.openai.com",
        "anthropic": "api.anthropic.com",
        "ollama": redacted_url(settings.ollama_base_url),
        "openai-compatible": redacted_url(settings.base_url) if settings.base_url else "(FOREMAN_BASE_URL unset)",
    }[choice.provider]
    return f"model: {choice.provider}/{choice.name} at {where}. Switch with FOREMAN_MODEL=local for the embedded model"
