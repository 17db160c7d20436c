"""Run a snippet of Python that a model wrote, as far from the host as this machine allows.

This module is the `run_python` tool itself: it starts the snippet inside the sandbox that
`foreman.tools.sandbox` chose and built, applies the limits of `foreman.tools.code_limits`
and collects what came out. Those names are re-exported here, so `foreman.tools.code`
stays the one place to import the tool from.

Always applied, whatever the sandbox:
- a fresh temporary working folder (also HOME and TMPDIR), deleted afterwards;
- a clean environment: only PATH, LANG, HOME, TMPDIR. No API keys, no FOREMAN_*/OPENAI_*;
- `python -I -S` of the *base* interpreter: the standard library only. -S skips `site`,
  so no site-packages (the base interpreter's may hold pydantic, yaml…) are on sys.path,
  and no .pth or sitecustomize runs; -I ignores PYTHON* variables, the user site and the
  cwd. Neither the project's packages nor its source are importable. (Without `site`
  the interactive helpers `exit()`/`quit()`/`help()` are absent; use sys.exit.);
- rlimits: CPU seconds, address space (memory), size of any file written, open files,
  no core dumps;
- a wall-clock timeout that kills the whole process group;
- stdout and stderr each capped at `max_output_bytes` (the rest is read and dropped);
- the snippet's parent is never Foreman: bwrap's init inside its pid namespace, or a tiny
  supervisor process (unshare, none), so `os.kill(os.getppid(), 9)` cannot kill Foreman.

Network, filesystem and process isolation depend on what the machine has; see
`foreman.tools.sandbox` for the three kinds (bwrap, unshare, none).
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from foreman.tools.code_limits import (
    CODE_DISK_MB,
    CODE_MAX_FILE_BYTES,
    CODE_MAX_OPEN_FILES,
    CODE_SHM_MB,
    CodeLimits,
    CodeResult,
)
from foreman.tools.sandbox import (
    ETC_FILES,
    PYTHON_FLAGS,
    SAFE_PATH,
    Sandbox,
    _bwrap_has_size,
    _bwrap_prefix,
    _clean_env,
    _describe,
    _python_roots,
    _sandbox_text,
    _scratch_mounts,
    _site_dirs,
    _starts,
    _under,
    _unshare_pid_ns,
    _unshare_prefix,
    choose_sandbox,
    isolation_report,
    sandbox_python,
    sandbox_works,
)

# run_python, and what it was importable beside before the sandbox and the limits moved
# out: callers and tests still reach those (some private helpers too) through this module.
__all__ = [
    "CODE_DISK_MB",
    "CODE_MAX_FILE_BYTES",
    "CODE_MAX_OPEN_FILES",
    "CODE_SHM_MB",
    "ETC_FILES",
    "PYTHON_FLAGS",
    "SAFE_PATH",
    "SUPERVISOR",
    "CodeLimits",
    "CodeResult",
    "Sandbox",
    "_bwrap_has_size",
    "_bwrap_prefix",
    "_clean_env",
    "_describe",
    "_python_roots",
    "_sandbox_text",
    "_scratch_mounts",
    "_site_dirs",
    "_starts",
    "_under",
    "_unshare_pid_ns",
    "_unshare_prefix",
    "choose_sandbox",
    "isolation_report",
    "run_python",
    "sandbox_python",
    "sandbox_works",
]

log = logging.getLogger(__name__)


# --- the command line: sandbox, supervisor, interpreter ---------------------------

# Sits between Foreman (or unshare) and the snippet, so the snippet's parent is this
# process, not Foreman. It mirrors the snippet's end: the same signal where it can, else
# (as PID 1 of a pid namespace, which cannot signal itself) exit status 128+N.
SUPERVISOR = """\
import os, signal, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
os.close(0)
code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
if code < 0:
    try:
        signal.signal(-code, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), -code)
    code = 128 - code
os._exit(code)
"""


def _command(kind: str, workdir: Path, python: Path, limits: CodeLimits,
             ro_binds: tuple[tuple[str, str], ...] = ()) -> list[str]:
    """The full command line: sandbox, supervisor where needed, then the interpreter.

    `ro_binds` (host path, sandbox path) are extra read-only mounts under bwrap, made before
    the root is remounted read-only (the chart tool shows matplotlib this way); the other
    kinds see the host filesystem anyway and ignore them.
    """
    snippet = [str(python), *PYTHON_FLAGS, "-"]
    if kind == "bwrap":
        prefix = _bwrap_prefix(workdir, python, limits)
        at = next(i for i in range(len(prefix) - 1) if prefix[i:i + 2] == ["--remount-ro", "/"])
        binds = [arg for src, dst in ro_binds for arg in ("--ro-bind", src, dst)]
        return prefix[:at] + binds + prefix[at:] + snippet  # bwrap's init is the parent
    supervised = [str(python), *PYTHON_FLAGS, "-c", SUPERVISOR, *snippet]
    if kind == "unshare":
        return _unshare_prefix(_unshare_pid_ns()) + supervised
    return supervised


# --- running ----------------------------------------------------------------------


def _limiter(limits: CodeLimits):  # type: ignore[no-untyped-def]
    """preexec_fn: set rlimits in the child before exec (inherited by the sandbox)."""
    memory = limits.memory_mb * 1024 * 1024

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (CODE_MAX_FILE_BYTES, CODE_MAX_FILE_BYTES))
        resource.setrlimit(resource.RLIMIT_NOFILE, (CODE_MAX_OPEN_FILES, CODE_MAX_OPEN_FILES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


class _CappedReader(threading.Thread):
    """Reads a pipe to the end, keeping the first `cap` bytes (so the child never blocks)."""

    def __init__(self, stream: Any, cap: int) -> None:
        super().__init__(daemon=True)
        self.stream, self.cap = stream, cap
        self.data = bytearray()
        self.overflow = False

    def run(self) -> None:
        while chunk := self.stream.read1(65536):
            room = self.cap - len(self.data)
            if len(chunk) > room:
                self.overflow = True
            if room > 0:
                self.data.extend(chunk[:room])

    def text(self) -> str:
        out = self.data.decode("utf-8", errors="replace")
        if self.overflow:
            out += f"\n[... output truncated at {self.cap} bytes ...]"
        return out


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # the group is already gone
        pass


WORKSPACE_MOUNT = "/workspace"
TABLES_MOUNT = "/tables"


def data_binds(workspace: Path) -> tuple[tuple[str, str], ...]:
    """The run's workspace and its tables (as CSV), for code to read: mounted read-only under
    bwrap at /workspace and /tables. Writes still go only to the scratch working folder; a file
    reaches the workspace through the write tool. (The weaker sandboxes see the host's files as
    they are: `data_paths` gives the code the real folders there.)"""
    from foreman.settings import get_settings
    from foreman.tools.tables.export import export_csv
    from foreman.tools.tables.store import sync_tables

    root = Path(workspace).resolve()
    tables = export_csv(sync_tables(root, get_settings()))
    return ((str(root), WORKSPACE_MOUNT), (str(tables), TABLES_MOUNT))


def data_paths(binds: tuple[tuple[str, str], ...], sandbox: Sandbox = "auto") -> tuple[str, str]:
    """Where code finds (the workspace, the tables) inside the sandbox `run_python` will pick."""
    inside = choose_sandbox(sandbox) == "bwrap"
    return binds[0][1 if inside else 0], binds[1][1 if inside else 0]


def run_python(code: str, limits: CodeLimits, *, sandbox: Sandbox = "auto",
               ro_binds: tuple[tuple[str, str], ...] = ()) -> CodeResult:
    """Run `code` with `python -I -S` in the best sandbox available, within `limits`.

    `sandbox` forces one kind ('bwrap', 'unshare', 'none'); 'auto' picks the strongest that
    works here. The code is given on stdin, so the working folder starts empty.
    `ro_binds`: extra read-only mounts under bwrap (see `_command`).
    """
    kind = choose_sandbox(sandbox)
    if kind == "none":
        log.warning("run_python has no sandbox here: the code can reach the network and files")
    python = sandbox_python()
    with tempfile.TemporaryDirectory(prefix="foreman-code-") as tmp:
        workdir = Path(tmp).resolve()
        cmd = _command(kind, workdir, python, limits, ro_binds)
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=_clean_env(workdir),
            # Safe despite threads: it only calls setrlimit on precomputed values (no imports).
            preexec_fn=_limiter(limits),  # noqa: PLW1509
            start_new_session=True,  # own process group, so a timeout kills all of it
        )
        readers = [
            _CappedReader(proc.stdout, limits.max_output_bytes),
            _CappedReader(proc.stderr, limits.max_output_bytes),
        ]
        for reader in readers:
            reader.start()
        # Feed from a thread: a large snippet must not block us before the timeout starts.
        threading.Thread(target=_feed, args=(proc, code), daemon=True).start()
        timed_out = False
        try:
            proc.wait(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        # Kill stragglers too (a background child may still hold the pipes).
        _kill_group(proc)
        proc.wait()
        for reader in readers:
            reader.join(timeout=5)
        stdout, stderr = (reader.text() for reader in readers)
        exit_code = _exit_code(kind, proc.returncode)
        if timed_out:
            stderr += f"\n[killed: the code ran longer than {limits.timeout_s:g}s]"
        elif exit_code == -signal.SIGXCPU:
            stderr += f"\n[killed: the code used more than {limits.cpu_s}s of CPU time]"
        elif exit_code == -signal.SIGKILL:
            stderr += "\n[killed by SIGKILL: over the CPU limit, or by a process of its own]"
    return CodeResult(
        exit_code=exit_code,
        stdout=stdout,
        stderr=stderr,
        timed_out=timed_out,
        truncated=any(reader.overflow for reader in readers),
        isolation=_describe(kind, limits),
    )


def _exit_code(kind: str, code: int) -> int:
    """Like subprocess: -N when killed by signal N (bwrap/unshare report that as 128+N)."""
    if kind != "none" and 128 < code < 128 + signal.NSIG:
        return -(code - 128)
    return code


def _feed(proc: subprocess.Popen[bytes], code: str) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(code.encode("utf-8"))
        proc.stdin.close()
    except (BrokenPipeError, ValueError):  # the sandbox died (or was killed) first
        pass
