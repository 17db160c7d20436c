"""Run a snippet of Python that a model wrote, as far from the host as this machine allows.

Always applied, whatever the sandbox:
- a fresh temporary working folder (also HOME and TMPDIR), deleted afterwards;
- a clean environment: only PATH, LANG, HOME, TMPDIR. No API keys, no FOREMAN_*/OPENAI_*;
- `python -I` of the *base* interpreter (stdlib only: neither the project's packages nor
  its source are on sys.path; user site, PYTHON* variables and the cwd are ignored);
- rlimits: CPU seconds, address space (memory), size of any file written, open files,
  no core dumps;
- a wall-clock timeout that kills the whole process group;
- stdout and stderr each capped at `max_output_bytes` (the rest is read and dropped).

Network and filesystem isolation depend on what the machine has, chosen at run time:
1. `bwrap` (bubblewrap): no network (own empty network namespace), own pid/ipc/uts/user
   namespaces, all capabilities dropped, no nested user namespaces; the filesystem is
   only /usr (and /bin, /lib… links), the Python prefix and a few /etc files, all
   read-only; /tmp is a small private tmpfs; the working folder is the only host path
   that is writable. Home folders, the workspace, the repo and its `.env` are invisible.
2. `unshare --net` (util-linux; needs root or unprivileged user namespaces): no network,
   but the host filesystem is visible and writable with the caller's rights.
3. nothing: same limits, but network and filesystem are the host's. A warning is logged
   and `CodeResult.isolation` says so.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

# Defaults that are not (yet) settings.
CODE_MAX_FILE_BYTES = 32 * 1024 * 1024  # largest single file the code may write
CODE_MAX_OPEN_FILES = 256
CODE_TMPFS_BYTES = 64 * 1024 * 1024  # size of the private /tmp inside bwrap
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group")

Sandbox = Literal["auto", "bwrap", "unshare", "none"]


class CodeLimits(BaseModel):
    """What a snippet may use before it is stopped."""

    timeout_s: float = Field(gt=0, description="Wall-clock limit; the process group is killed.")
    cpu_s: int = Field(gt=0, description="CPU seconds (RLIMIT_CPU) per process.")
    memory_mb: int = Field(gt=0, description="Address space (RLIMIT_AS) per process.")
    max_output_bytes: int = Field(gt=0, description="Cap for stdout and for stderr, each.")

    @classmethod
    def from_settings(cls, settings: Any) -> CodeLimits:
        return cls(
            timeout_s=settings.code_timeout_s,
            cpu_s=settings.code_cpu_s,
            memory_mb=settings.code_memory_mb,
            max_output_bytes=settings.code_max_output_bytes,
        )


class CodeResult(BaseModel):
    """What happened. A non-zero exit or a timeout is a result, not an exception."""

    exit_code: int = Field(
        description="Negative: killed by that signal (-9 on timeout, -24 over the CPU limit)."
    )
    stdout: str
    stderr: str
    timed_out: bool
    truncated: bool = Field(description="True if stdout or stderr went over the cap.")
    isolation: str = Field(description="The sandbox and limits that were applied.")


# --- the interpreter and the sandboxes --------------------------------------------


def sandbox_python() -> Path:
    """The base interpreter behind this (virtual) environment: stdlib only."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return Path(base).resolve()


def _python_roots(python: Path) -> list[Path]:
    """Folders bwrap must show for the interpreter to start (its prefix, read-only)."""
    roots = {Path(sys.base_prefix).resolve(), python.parent.parent}
    return sorted(r for r in roots if not _under(r, Path("/usr")))


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _bwrap_prefix(workdir: Path, python: Path) -> list[str]:
    args = ["bwrap", "--ro-bind", "/usr", "/usr"]
    # Merged-/usr systems have /bin -> usr/bin etc.; mirror links, bind real folders.
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        top = Path("/") / name
        if top.is_symlink():
            args += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            args += ["--ro-bind", str(top), str(top)]
    for name in ETC_FILES:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    args += [
        "--dev", "/dev",
        "--proc", "/proc",
        "--size", str(CODE_TMPFS_BYTES), "--tmpfs", "/tmp",
    ]  # fmt: skip
    # After the /tmp tmpfs, so neither the interpreter nor the workdir can be hidden by it.
    for root in _python_roots(python):
        args += ["--ro-bind", str(root), str(root)]
    args += [
        "--bind", str(workdir), str(workdir),
        "--remount-ro", "/",
        "--chdir", str(workdir),
        "--unshare-all",  # net, pid, ipc, uts, cgroup (user: below)
        "--unshare-user", "--disable-userns",
        "--cap-drop", "ALL",
        "--die-with-parent",
        "--new-session",
    ]  # fmt: skip
    return args


def _unshare_prefix() -> list[str]:
    # No --pid/--fork: unshare then execs Python itself, so exit codes and signals stay
    # Python's (unshare's forking parent garbles a signal death, e.g. SIGXCPU).
    base = ["unshare", "--net"]
    if os.geteuid() != 0:
        base[1:1] = ["--user", "--map-root-user"]
    return base


def _prefix(kind: str, workdir: Path, python: Path) -> list[str]:
    if kind == "bwrap":
        return _bwrap_prefix(workdir, python)
    if kind == "unshare":
        return _unshare_prefix()
    return []


@cache
def sandbox_works(kind: str) -> bool:
    """Whether `kind` is installed *and* starts here (containers often forbid namespaces)."""
    if kind == "none":
        return True
    if shutil.which(kind) is None:
        return False
    python = sandbox_python()
    with tempfile.TemporaryDirectory(prefix="foreman-probe-") as tmp:
        cmd = _prefix(kind, Path(tmp), python) + [str(python), "-I", "-c", "pass"]
        try:
            done = subprocess.run(
                cmd,
                check=False,
                capture_output=True,
                timeout=30,
                cwd=tmp,
                env=_clean_env(Path(tmp)),
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
    if done.returncode != 0:
        log.debug("%s probe failed: %s", kind, done.stderr.decode(errors="replace"))
    return done.returncode == 0


def choose_sandbox(preferred: Sandbox = "auto") -> str:
    """The sandbox to use: the first that works of bwrap, unshare, none (for 'auto')."""
    if preferred != "auto":
        if not sandbox_works(preferred):
            raise RuntimeError(
                f"The {preferred!r} sandbox does not work on this machine; use 'auto' or "
                "install bubblewrap (apt-get install bubblewrap)."
            )
        return preferred
    for kind in ("bwrap", "unshare"):
        if sandbox_works(kind):
            return kind
    return "none"


_SANDBOX_TEXT = {
    "bwrap": (
        "bwrap: no network, own pid/ipc/uts/user namespaces, all capabilities dropped; "
        "read-only /usr and Python prefix, host files hidden, only the working folder "
        "writable"
    ),
    "unshare": (
        "unshare: no network; the host filesystem is visible and writable (no filesystem isolation)"
    ),
    "none": (
        "NO SANDBOX: network and host filesystem are reachable (install bubblewrap for isolation)"
    ),
}


def _describe(kind: str, limits: CodeLimits) -> str:
    return (
        f"{_SANDBOX_TEXT[kind]}; limits: wall {limits.timeout_s:g}s, cpu {limits.cpu_s}s, "
        f"memory {limits.memory_mb} MB, files {CODE_MAX_FILE_BYTES // (1024 * 1024)} MB, "
        f"output {limits.max_output_bytes} bytes per stream; clean env, temp working folder"
    )


def isolation_report() -> str:
    """Plain words on what `run_python` isolates on this machine, and what it does not."""
    kind = choose_sandbox()
    lines = [f"run_python sandbox on this machine: {kind}", f"  {_SANDBOX_TEXT[kind]}."]
    lines.append(
        "  Always: `python -I` of the base interpreter (stdlib only), a fresh temp working "
        "folder deleted afterwards, environment reduced to PATH/LANG/HOME/TMPDIR, rlimits "
        "on CPU time, memory (address space), file size, open files and core dumps, a wall "
        "timeout that kills the process group, stdout/stderr capped."
    )
    not_isolated = []
    if kind != "bwrap":
        not_isolated.append("the host filesystem (readable, and writable with this user's rights)")
    if kind == "none":
        not_isolated.append("the network (including localhost services)")
    if kind != "bwrap":
        not_isolated.append(
            "processes that start their own session (they can outlive the timeout; "
            "bwrap's pid namespace ends them)"
        )
    if os.geteuid() == 0:
        not_isolated.append(
            "the number of processes (RLIMIT_NPROC does not bind root; a fork bomb is "
            "stopped only by the timeout)"
        )
    not_isolated.append(
        "total CPU and memory across child processes (limits are per process; no cgroups)"
    )
    if kind == "bwrap":
        not_isolated.append("the kernel itself (namespaces, not a VM)")
    lines.append("  Not isolated: " + "; ".join(not_isolated) + ".")
    if not shutil.which("bwrap"):
        lines.append("  For full isolation: apt-get install bubblewrap")
    return "\n".join(lines)


# --- running ------------------------------------------------------------------------


def _clean_env(workdir: Path) -> dict[str, str]:
    return {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "HOME": str(workdir), "TMPDIR": str(workdir)}


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


def run_python(code: str, limits: CodeLimits, *, sandbox: Sandbox = "auto") -> CodeResult:
    """Run `code` with `python -I` in the best sandbox available, within `limits`.

    `sandbox` forces one kind ('bwrap', 'unshare', 'none'); 'auto' picks the strongest that
    works here. The code is given on stdin, so the working folder starts empty.
    """
    kind = choose_sandbox(sandbox)
    if kind == "none":
        log.warning("run_python has no sandbox here: the code can reach the network and files")
    python = sandbox_python()
    with tempfile.TemporaryDirectory(prefix="foreman-code-") as tmp:
        workdir = Path(tmp).resolve()
        cmd = _prefix(kind, workdir, python) + [str(python), "-I", "-"]
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
            stderr += "\n[killed by SIGKILL: over the CPU or memory limit]"
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
