"""The serving process: llama.cpp in-process behind the forcing proxy, until stopped or idle.

This is what `python -m foreman.agents.local_server serve` runs (the client,
`agents/local_server.py`, starts it as a detached child). It loads the model with
`xllamacpp`, puts the proxy (`agents/local_proxy.py`) on its own loopback port,
writes the state file once it is accepting, and stops itself after `idle_minutes`
without requests. The llama.cpp tuning it starts with lives here too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from foreman.agents.local_config import ServerConfig, model_name_for
from foreman.agents.local_retry import retry_until
from foreman.agents.local_state import (
    ServerState,
    locked,
    pid_alive,
    read_state,
    state_paths,
    write_state,
)
from foreman.errors import LocalModelError

log = logging.getLogger("foreman.local_model")

IDLE_CHECK_S = 5.0
PORT_WAIT_S = 10.0

# llama.cpp tuning. Prompt processing (big batches) uses `config.threads`; token-by-token
# generation uses `config.gen_threads` (FOREMAN_LOCAL_GEN_THREADS; the default and the
# measurements behind it are in agents/local_config.py).
# llama.cpp's n_cache_reuse (KV shifting) only reuses cached chunks when the new prompt
# is the old one with parts *deleted*; ControlFlow's prompts differ by *new* text (the
# task id and objective), so it never fired (cache_n unchanged at 0/16/64/256). The
# proxy's prompt reordering (`local_prompts.cache_friendly`) is what helps instead.
CACHE_REUSE_TOKENS = 0
N_BATCH = 2048
N_UBATCH = 512
N_PARALLEL = 1


def generation_threads(config: ServerConfig) -> int:
    """Threads llama.cpp decodes with."""
    return config.gen_threads


def llama_params(config: ServerConfig):  # -> xllamacpp.CommonParams
    """llama.cpp's parameters for `config`: the model, its projector (images) when there is one."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(config.model_path)
    if config.mmproj_path is not None:
        params.mmproj.path = str(config.mmproj_path)
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
    return params


def _start_llama(config: ServerConfig):  # -> xllamacpp.Server
    import xllamacpp

    params = llama_params(config)
    try:
        server = xllamacpp.Server(params)
    except Exception as exc:  # any failure of a C++ constructor; see below
        # Broad on purpose: whatever stops llama.cpp loading this file reaches Python
        # through Cython as one class or another. xllamacpp's own check raises
        # RuntimeError ("Failed to init server", measured for a missing file and for a
        # file that is not GGUF); a C++ exception thrown while loading arrives as the
        # class Cython maps it to (std::bad_alloc, say for a context too big for memory:
        # MemoryError; std::invalid_argument: ValueError). Each one means "this model
        # cannot be served", so each becomes a LocalModelError naming the file, chained.
        raise LocalModelError(
            f"llama.cpp could not load {config.model_path}"
            + (f" with the projector {config.mmproj_path}" if config.mmproj_path else "")
            + f": {exc}. Is it a GGUF chat model"
            + (" and its own mmproj (from the same release)?" if config.mmproj_path else "?")
        ) from exc
    return server


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    retry_until(
        lambda: sock.bind(("127.0.0.1", port)),
        retry_on=OSError, timeout_s=PORT_WAIT_S, every_s=0.5,
        give_up=lambda exc: (
            f"Port {port} on 127.0.0.1 is in use ({exc}). Set FOREMAN_LOCAL_PORT to a "
            "free port, or 0 to pick one."
        ),
    )
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

    state_path, lock_path, log_path = state_paths(home)
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
        llama_url, name, on_request=touched, tool_mode=config.tool_mode,
        info={"pid": os.getpid(), "model_path": str(config.model_path),
              "mmproj_path": str(config.mmproj_path) if config.mmproj_path else None},
        vision=config.mmproj_path is not None,
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
        lock = contextlib.nullcontext() if parent_holds_lock else locked(lock_path)
        with lock:
            current = read_state(state_path)
            if current is None or current.pid == os.getpid() or not pid_alive(current.pid):
                write_state(state_path, state)
        log.warning("Foreman local model %s on http://127.0.0.1:%s/v1 (llama.cpp %s)",
                    name, proxy_port, llama_url)

    def watch_idle() -> None:
        while not server.should_exit:
            time.sleep(IDLE_CHECK_S)
            if idle_minutes <= 0 or time.monotonic() - last_used[0] < idle_minutes * 60:
                continue
            with locked(lock_path):
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
        with contextlib.suppress(LocalModelError), locked(lock_path, timeout_s=10.0):
            _forget(state_path)
        del llama


def _forget(state_path: Path) -> None:
    """Remove the state file if it still names this process."""
    current = read_state(state_path)
    if current is not None and current.pid == os.getpid():
        state_path.unlink(missing_ok=True)
