"""The shared server's state file, `<home>/local-model/server.json`, and the lock that guards it.

Every Foreman process on the machine reads this file to find the one running server,
and the server writes it once it is accepting. Reading and writing happen under an
`fcntl` lock on `server.lock`, so two runs starting together start one server; the
kernel releases the lock if its holder dies. Both the client (`agents/local_server.py`)
and the serving process (`agents/local_daemon.py`) use what is here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from foreman.agents.local_config import ServerConfig
from foreman.agents.local_retry import retry_until
from foreman.settings import Settings

# How long `ensure_running` waits for a new server to answer. It holds the lock all
# that time, so a process waiting for the lock waits a little longer.
START_TIMEOUT_S = 120.0
LOCK_TIMEOUT_S = START_TIMEOUT_S + 30.0


class ServerState(BaseModel):
    """The state file: who serves what, where."""

    pid: int
    proxy_port: int
    llama_port: int
    config: ServerConfig
    model_name: str
    started_at: str
    log_path: Path


def state_dir(settings: Settings) -> Path:
    return settings.home.expanduser() / "local-model"


def state_paths(settings: Settings | Path) -> tuple[Path, Path, Path]:
    """State file, lock file and log, under a Settings' home (or a home path)."""
    home = settings if isinstance(settings, Path) else settings.home
    folder = home.expanduser() / "local-model"
    return folder / "server.json", folder / "server.lock", folder / "server.log"


@contextlib.contextmanager
def locked(lock_path: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the machine-wide lock on the state file (released if the holder dies)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        retry_until(
            lambda: fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB),
            retry_on=BlockingIOError, timeout_s=timeout_s, every_s=0.1, keep_cause=False,
            give_up=lambda _: (
                f"Another Foreman process has held {lock_path} for {timeout_s:.0f} s "
                "while starting or stopping the local model. Wait for it, or stop it."
            ),
        )
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_state(path: Path) -> ServerState | None:
    try:
        return ServerState.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None


def write_state(path: Path, state: ServerState) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2))
    os.replace(tmp, path)


def pid_alive(pid: int) -> bool:
    """Whether the process a state file names still runs."""
    with contextlib.suppress(ChildProcessError, OSError):
        # Reap it if it is our own exited child, or it would linger as a zombie.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
