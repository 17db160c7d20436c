"""Foreman's settings: one place, read from `FOREMAN_*` environment variables (or a `.env` file).

Level 1 configuration lives here: which model (`FOREMAN_MODEL`), its temperature and
max tokens. So do the guards' limits, because a limit a user cannot find is a limit
nobody trusts.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from foreman.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_WORKSPACE = REPO_ROOT / "demo" / "workspace"


class Settings(BaseSettings):
    """Everything a user may set. Each field is `FOREMAN_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="FOREMAN_", env_file=".env", extra="ignore")

    home: Path = Field(
        default=Path.home() / ".foreman",
        description="Where Foreman keeps its state: audit log, run store, local-model logs.",
    )

    @field_validator("home")
    @classmethod
    def _home_is_a_folder(cls, value: Path) -> Path:
        path = Path(value).expanduser()
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} is not a folder; point it at a folder Foreman may create and write")
        return path

    # --- Level 1: the model -------------------------------------------------
    model: str = Field(
        default="local",
        description=(
            "Which model agents use: 'local' (the embedded llama.cpp server), "
            "'openai/<model>', 'anthropic/<model>', 'ollama/<model>', or "
            "'openai-compatible/<model>' together with FOREMAN_BASE_URL."
        ),
    )
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, gt=0)
    base_url: str | None = Field(
        default=None, description="Base URL of an OpenAI-compatible endpoint (…/v1)."
    )
    api_key: str | None = Field(
        default=None, description="API key for the OpenAI-compatible endpoint, if it needs one."
    )
    ollama_base_url: str = "http://127.0.0.1:11434"

    # --- the embedded local model -------------------------------------------
    local_model: str | None = Field(
        default=None,
        description=(
            "A catalogue model to serve (`foreman model list`), e.g. 'qwen2.5-coder-0.5b' or 'tiny'; "
            "overrides `foreman model use`. Unset: the selected model, else the catalogue default."
        ),
    )
    local_model_path: Path | None = Field(
        default=None,
        description="Any GGUF file to serve instead of a catalogue model; overrides FOREMAN_LOCAL_MODEL.",
    )
    local_models_dir: Path | None = Field(
        default=None, description="Where `foreman model pull` puts models. Unset: <FOREMAN_HOME>/models."
    )
    local_ctx: int = Field(default=8192, ge=512)
    local_threads: int = Field(default=2, ge=1, description="llama.cpp threads for reading the prompt.")
    local_gen_threads: int | None = Field(
        default=None, ge=1,
        description="llama.cpp threads for generating tokens. Unset: the measured default (see agents/local_daemon.py).",
    )
    local_tool_calls: Literal["forced", "native", "native-required"] | None = Field(
        default=None,
        description=(
            "How the embedded model makes tool calls: 'forced' (a grammar-constrained call, works with "
            "any model), 'native' (the model's own chat template and llama.cpp's parser), "
            "'native-required'. Unset: what the catalogue measured best for the model; 'forced' for a path."
        ),
    )
    local_port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port.")
    local_idle_minutes: float = Field(
        default=30.0, ge=0, description="Stop the embedded server after this long unused."
    )

    # --- how much ControlFlow bookkeeping reaches Prefect ----------------------
    cf_task_runs: bool = Field(
        default=False,
        description=(
            "Show ControlFlow's own nested task runs ('Call LLM', 'Tool call: X') and its "
            "per-call artifacts in Prefect. Off by default: they cost most of a step's CPU and "
            "race under concurrency; agent turns and tool calls are in each step's log instead."
        ),
    )

    model_timeout_s: float = Field(
        default=120.0, gt=0,
        description="Seconds one hosted model call may take before its client abandons and retries it "
                    "(the openai/anthropic libraries' own default is 600).",
    )

    # --- where Foreman's own stores live (foreman/db.py) -----------------------
    database_url: str | None = Field(
        default=None,
        description=(
            "Unset: the run store, audit log, memory and knowledge are SQLite files under FOREMAN_HOME. "
            "'postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE': all of them in that one PostgreSQL "
            "database, each in its own schema (pgvector for vectors when the server has it), so "
            "several workers on several machines share results and the audit trail."
        ),
    )

    # --- where plan nodes run (engine/task_runners.py) -------------------------
    task_runner: Literal["threads", "dask"] = Field(
        default="threads",
        description=(
            "Where a flow runs its plan nodes: 'threads' (a pool in the flow's process) or 'dask' "
            "(prefect-dask: FOREMAN_DASK_ADDRESS, else a local cluster of worker processes)."
        ),
    )
    task_threads: int = Field(default=8, ge=1, description="Plan nodes at once per process (threads).")
    dask_address: str | None = Field(
        default=None, description="A running Dask scheduler (tcp://host:8786); unset: a local cluster per flow run.",
    )
    dask_workers: int = Field(default=2, ge=1, description="Worker processes of the local Dask cluster.")

    # --- tools and their guards ---------------------------------------------
    workspace: Path = Field(
        default=DEMO_WORKSPACE, description="The only folder file tools may touch."
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost"],
        description="Hosts the fetch tool may reach (exact names; '*.example.org' for subdomains).",
    )
    http_timeout_s: float = Field(default=10.0, gt=0)
    http_max_bytes: int = Field(default=1_000_000, gt=0)
    http_max_redirects: int = Field(default=3, ge=0)
    code_timeout_s: float = Field(default=10.0, gt=0)
    code_cpu_s: int = Field(default=10, gt=0)
    code_memory_mb: int = Field(default=512, gt=0)
    code_max_output_bytes: int = Field(default=64_000, gt=0)
    code_disk_mb: int = Field(
        default=64,
        gt=0,
        description=(
            "Space the sandboxed code may write (bwrap): its working folder and /tmp share one "
            "tmpfs of this size, held in RAM, plus up to 16 MB of /dev/shm."
        ),
    )
    file_max_read_bytes: int = Field(default=200_000, gt=0)
    file_allow_hardlinks: bool = Field(
        default=False,
        description=(
            "Let file tools read files that have more than one hard link. Off by default: the "
            "other link may be a file outside the workspace, which no path check can see."
        ),
    )

    # --- people in the loop ------------------------------------------------------
    approval_tools: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Tools that always need a person's approval first: any step that may use one gets an "
            "approval point, whoever wrote the plan. Comma-separated, e.g. 'write_file,run_python'."
        ),
    )
    approval_poll_s: int = Field(default=10, ge=1, description="How often a paused run checks for a decision.")
    notify_blocks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Prefect notification blocks told when a run fails or waits for approval, as "
            "'<block-type-slug>/<name>' (e.g. 'slack-webhook/ops'), comma-separated."
        ),
    )

    # --- Level 2: knowledge ------------------------------------------------------
    knowledge_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description=(
            "Folders `foreman knowledge ingest` may index, comma-separated. Empty: your home folder "
            "and FOREMAN_WORKSPACE. A run's own workspace is always indexed for grounding."
        ),
    )
    knowledge_max_file_bytes: int = Field(
        default=5_000_000, gt=0, description="Files larger than this are skipped by an ingest (and counted)."
    )

    # --- Level 4: multi-modal ----------------------------------------------------
    local_mmproj_path: Path | None = Field(
        default=None,
        description=(
            "The multimodal projector (mmproj GGUF) that goes with FOREMAN_LOCAL_MODEL_PATH, "
            "so the embedded server can read images. Unset: the local model is text-only."
        ),
    )
    model_vision: bool | None = Field(
        default=None,
        description=(
            "Whether FOREMAN_MODEL reads images. Unset: openai/ and anthropic/ models do, "
            "local does with FOREMAN_LOCAL_MMPROJ_PATH, ollama/ and openai-compatible/ do not."
        ),
    )
    media_max_file_mb: int = Field(default=50, gt=0, description="Largest attached file.")
    media_max_pdf_pages: int = Field(default=200, gt=0, description="Most pages read from one PDF.")
    media_max_image_pixels: int = Field(
        default=40_000_000, gt=0, description="Largest image (width x height) read or OCR'd."
    )
    media_max_audio_s: float = Field(
        default=1800.0, gt=0, description="Longest audio file transcribed, in seconds."
    )

    # --- Level 5: memory ---------------------------------------------------------
    memory_history_tokens: int = Field(
        default=1200, ge=200,
        description="Tokens of a thread's history a chat turn shows the model; older turns are summarized.",
    )
    memory_consolidate_every: int = Field(
        default=4, ge=1, description="Every this many chat turns, durable facts move into long-term memory.",
    )

    @field_validator("approval_tools", "notify_blocks", "knowledge_roots", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        """Accept 'a,b' as well as a JSON list from the environment."""
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [v.strip() for v in text.split(",") if v.strip()]
        return value

    @property
    def audit_db(self) -> Path:
        return self.home / "audit.sqlite3"

    @property
    def knowledge_db(self) -> Path:
        return self.home / "knowledge.sqlite3"

    @property
    def memory_db(self) -> Path:
        return self.home / "memory.sqlite3"

    @property
    def tiktoken_cache(self) -> Path:
        return self.home / "tiktoken"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings. Call `reset_settings()` after changing the environment.

    A value that does not read is a `ConfigurationError` naming the variable and what it must be
    (the CLI prints it as one line, exit code 2), never pydantic's multi-line report."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigurationError(settings_problem(exc)) from None


def settings_problem(error: ValidationError) -> str:
    """One line: each bad setting as FOREMAN_NAME='value': why."""
    parts = []
    for problem in error.errors():
        name = "FOREMAN_" + "_".join(str(p) for p in problem.get("loc", ())[:1]).upper()
        given = problem.get("input")
        shown = f"={given!r}" if isinstance(given, (str, int, float)) and len(str(given)) <= 80 else ""
        parts.append(f"{name}{shown}: {problem.get('msg', 'invalid')}")
    return "; ".join(parts) + " (fix or unset it)"


def reset_settings() -> None:
    get_settings.cache_clear()
