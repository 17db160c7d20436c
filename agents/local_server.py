"""One embedded llama.cpp server per machine, shared by every Foreman run.

Loading a model and warming its prompt cache is the slow part of a local run, so the
server is a small daemon that outlives the run that started it: llama.cpp
(`xllamacpp`, in-process) on one loopback port and the forcing proxy
(`agents/local_proxy.py`) on another. Its state file,
`<home>/local-model/server.json`, is only written or read under an `fcntl` lock, so two
runs starting together start one server. A server serving another model (the settings
changed) is restarted, never reused. It stops itself after `local_idle_minutes` unused.

Run it in the foreground with `python -m foreman.agents.local_server serve`.

This module is the client side (`ensure_running`, `stop`, `status`) and that command.
The rest is split by job: what to serve, `agents/local_config.py`; the state file and
its lock, `agents/local_state.py`; the serving process and its llama.cpp tuning,
`agents/local_daemon.py`. Their public names are re-exported here.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from pydantic import BaseModel

from foreman.agents.local_config import (
    ServerConfig,
    bundled_model_path,
    config_for,
    model_name_for,
    resolve_model_path,
)
from foreman.agents.local_daemon import (
    CACHE_REUSE_TOKENS,
    IDLE_CHECK_S,
    N_BATCH,
    N_PARALLEL,
    N_UBATCH,
    generation_threads,
    run_server,
)
from foreman.agents.local_state import (
    LOCK_TIMEOUT_S,
    START_TIMEOUT_S,
    ServerState,
    locked,
    pid_alive,
    read_state,
    state_dir,
    state_paths,
)
from foreman.errors import LocalModelError
from foreman.settings import Settings, get_settings

log = logging.getLogger("foreman.local_model")

STOP_TIMEOUT_S = 15.0
LOG_ROTATE_BYTES = 5_000_000


class LocalServerInfo(BaseModel):
    """Where to reach the running server; `base_url` is the OpenAI-compatible proxy."""

    base_url: str
    model_path: Path
    model_name: str
    pid: int
    log_path: Path
    started_at: str
    llama_url: str


class LocalServerStatus(BaseModel):
    running: bool
    detail: str
    info: LocalServerInfo | None = None
    state_path: Path


def _healthy(state: ServerState, timeout_s: float = 3.0) -> bool:
    """The proxy answers, llama.cpp behind it answers, and it is the process on record."""
    try:
        reply = httpx.get(f"http://127.0.0.1:{state.proxy_port}/health", timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return reply.status_code == 200 and reply.json().get("pid") == state.pid


def _info(state: ServerState) -> LocalServerInfo:
    return LocalServerInfo(
        base_url=f"http://127.0.0.1:{state.proxy_port}/v1",
        model_path=state.config.model_path,
        model_name=state.model_name,
        pid=state.pid,
        log_path=state.log_path,
        started_at=state.started_at,
        llama_url=f"http://127.0.0.1:{state.llama_port}",
    )


def log_tail(log_path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- client side


def ensure_running(settings: Settings | None = None) -> LocalServerInfo:
    """The running server for these settings, started (or restarted) if needed."""
    settings = settings or get_settings()
    wanted = config_for(settings)
    state_path, lock_path, log_path = state_paths(settings)
    with locked(lock_path):
        state = read_state(state_path)
        # Generous timeout: on 2 busy cores a working server can answer slowly, and
        # restarting it would cut off whoever is using it.
        if state and wanted.same_model_as(state.config) and _healthy(state, timeout_s=15.0):
            return _info(state)
        if state:
            log.info("Local model server %s is stale or serves another model; restarting", state.pid)
            _terminate(state.pid)
            state_path.unlink(missing_ok=True)
        return _info(_spawn(settings, wanted, state_path, log_path))


def _spawn(settings: Settings, config: ServerConfig, state_path: Path, log_path: Path) -> ServerState:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if log_path.exists() and log_path.stat().st_size > LOG_ROTATE_BYTES:
        os.replace(log_path, log_path.with_suffix(".log.1"))
    command = [
        sys.executable, "-m", "foreman.agents.local_server", "serve",
        "--model", str(config.model_path), "--ctx", str(config.ctx),
        "--threads", str(config.threads), "--gen-threads", str(config.gen_threads),
        "--tool-mode", config.tool_mode, "--port", str(config.port),
        "--idle-minutes", str(settings.local_idle_minutes), "--home", str(settings.home),
        "--parent-holds-lock",
        *(["--mmproj", str(config.mmproj_path)] if config.mmproj_path else []),
    ]
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalModelError(
                f"The local model server exited (code {process.returncode}) while starting. "
                f"Log {log_path}:\n{log_tail(log_path)}"
            )
        state = read_state(state_path)
        if state and state.pid == process.pid and _healthy(state):
            return state
        time.sleep(0.1)
    _terminate(process.pid)
    raise LocalModelError(
        f"The local model server was not ready after {START_TIMEOUT_S:.0f} s "
        f"(model {config.model_path}). Log {log_path}:\n{log_tail(log_path)}"
    )


def _terminate(pid: int) -> None:
    """SIGTERM, then SIGKILL if it has not gone after STOP_TIMEOUT_S."""
    if pid == os.getpid() or not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def stop(settings: Settings | None = None) -> bool:
    """Stop the server if one runs. True if one was running."""
    settings = settings or get_settings()
    state_path, lock_path, _ = state_paths(settings)
    with locked(lock_path):
        state = read_state(state_path)
        if state is None:
            return False
        running = pid_alive(state.pid)
        _terminate(state.pid)
        state_path.unlink(missing_ok=True)
        return running


def status(settings: Settings | None = None) -> LocalServerStatus:
    """Whether a server is running and healthy, without starting one."""
    settings = settings or get_settings()
    state_path, _, _ = state_paths(settings)
    state = read_state(state_path)
    if state is None:
        return LocalServerStatus(running=False, detail="not running", state_path=state_path)
    if not _healthy(state):
        alive = pid_alive(state.pid)
        detail = f"pid {state.pid} {'is not answering' if alive else 'has exited'}"
        return LocalServerStatus(running=False, detail=detail, state_path=state_path)
    return LocalServerStatus(
        running=True, detail=f"serving {state.model_name}", info=_info(state), state_path=state_path
    )


# --------------------------------------------------------------------------- the command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m foreman.agents.local_server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve in the foreground (the daemon runs this)")
    serve.add_argument("--model", type=Path)
    serve.add_argument("--ctx", type=int)
    serve.add_argument("--threads", type=int)
    serve.add_argument("--gen-threads", type=int)
    serve.add_argument("--tool-mode", choices=["forced", "native", "native-required"])
    serve.add_argument("--port", type=int)
    serve.add_argument("--mmproj", type=Path, help="the vision model's projector (default: FOREMAN_LOCAL_MMPROJ_PATH)")
    serve.add_argument("--idle-minutes", type=float)
    serve.add_argument("--home", type=Path)
    serve.add_argument("--parent-holds-lock", action="store_true", help=argparse.SUPPRESS)
    sub.add_parser("status")
    sub.add_parser("stop")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = get_settings()
    if args.command == "status":
        print(status(settings).model_dump_json(indent=2))
        return 0
    if args.command == "stop":
        print("stopped" if stop(settings) else "not running")
        return 0
    base = config_for(settings.model_copy(update={"local_model_path": args.model}) if args.model else settings)
    config = ServerConfig(
        model_path=args.model or base.model_path,
        ctx=args.ctx or settings.local_ctx,
        threads=args.threads or base.threads,
        gen_threads=args.gen_threads or base.gen_threads,
        tool_mode=args.tool_mode or base.tool_mode,
        port=settings.local_port if args.port is None else args.port,
        mmproj_path=args.mmproj or base.mmproj_path,
    )
    idle = settings.local_idle_minutes if args.idle_minutes is None else args.idle_minutes
    run_server(
        config, args.home or settings.home, idle_minutes=idle,
        parent_holds_lock=args.parent_holds_lock,
    )
    return 0


__all__ = [
    "CACHE_REUSE_TOKENS",
    "IDLE_CHECK_S",
    "LOCK_TIMEOUT_S",
    "LOG_ROTATE_BYTES",
    "N_BATCH",
    "N_PARALLEL",
    "N_UBATCH",
    "START_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "LocalModelError",
    "LocalServerInfo",
    "LocalServerStatus",
    "ServerConfig",
    "ServerState",
    "bundled_model_path",
    "config_for",
    "ensure_running",
    "generation_threads",
    "log_tail",
    "main",
    "model_name_for",
    "resolve_model_path",
    "run_server",
    "state_dir",
    "status",
    "stop",
]


if __name__ == "__main__":
    sys.exit(main())
