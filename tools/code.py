"""Run a snippet of Python that a model wrote, as far from the host as this machine allows.

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

Network, filesystem and process isolation depend on what the machine has, chosen at run
time:
1. `bwrap` (bubblewrap): no network (own empty network namespace), own pid/ipc/uts/user
   namespaces, all capabilities dropped, no nested user namespaces; the filesystem is
   only /usr (and /bin, /lib… links), the Python prefix and a few /etc files, all
   read-only, with the interpreter's site-packages folders covered by empty read-only
   mounts. What the code can write is memory, not host disk, and capped: the working
   folder and /tmp share one tmpfs of `disk_mb`, /dev/shm is its own small tmpfs and
   the rest of /dev is read-only. Home folders, the workspace, the repo and its `.env`
   are invisible. (A bwrap without `--size` gets the host working folder instead,
   capped per file only, and no writable /dev/shm.)
2. `unshare` (util-linux; needs root or unprivileged user namespaces): no network and,
   where it works, its own pid namespace (host processes are invisible and cannot be
   signalled; everything the code started dies with it). The host filesystem is
   visible and writable with the caller's rights, so site-packages can be put back on
   sys.path by hand and the disk is capped per file only.
3. nothing: same limits, but network, filesystem and this user's processes are the
   host's. A warning is logged and `CodeResult.isolation` says so.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

# Defaults that are not (yet) settings.
CODE_MAX_FILE_BYTES = 32 * 1024 * 1024  # largest single file the code may write
CODE_MAX_OPEN_FILES = 256
CODE_DISK_MB = 64  # bwrap: the tmpfs holding the working folder and /tmp
CODE_SHM_MB = 16  # bwrap: the tmpfs at /dev/shm (at most; never more than disk_mb)
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
PYTHON_FLAGS = ("-I", "-S")  # isolated mode, and no `site`: the standard library only
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group")

Sandbox = Literal["auto", "bwrap", "unshare", "none"]


class CodeLimits(BaseModel):
    """What a snippet may use before it is stopped."""

    timeout_s: float = Field(gt=0, description="Wall-clock limit; the process group is killed.")
    cpu_s: int = Field(gt=0, description="CPU seconds (RLIMIT_CPU) per process.")
    memory_mb: int = Field(gt=0, description="Address space (RLIMIT_AS) per process.")
    max_output_bytes: int = Field(gt=0, description="Cap for stdout and for stderr, each.")
    disk_mb: int = Field(
        default=CODE_DISK_MB,
        gt=0,
        description=(
            "bwrap: size of the memory-backed tmpfs for the working folder and /tmp together "
            f"(/dev/shm gets up to {CODE_SHM_MB} MB more). Counts against the host's RAM, "
            "not against memory_mb."
        ),
    )

    @property
    def shm_mb(self) -> int:
        return min(self.disk_mb, CODE_SHM_MB)

    @classmethod
    def from_settings(cls, settings: Any) -> CodeLimits:
        return cls(
            timeout_s=settings.code_timeout_s,
            cpu_s=settings.code_cpu_s,
            memory_mb=settings.code_memory_mb,
            max_output_bytes=settings.code_max_output_bytes,
            # getattr: duck-typed settings from before this limit existed still work.
            disk_mb=getattr(settings, "code_disk_mb", CODE_DISK_MB),
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


def sandbox_python() -> Path:
    """The base interpreter behind this (virtual) environment; run with -I -S: stdlib only."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return Path(base).resolve()


def _python_roots(python: Path) -> list[Path]:
    """Folders bwrap must show for the interpreter to start (its prefix, read-only)."""
    roots = {Path(sys.base_prefix).resolve(), python.parent.parent}
    return sorted(r for r in roots if not _under(r, Path("/usr")))


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@cache
def _site_dirs(python: Path) -> tuple[Path, ...]:
    """The interpreter's own site-packages folders (as `site` would add them), if any.

    -S already keeps them off sys.path; bwrap also covers them, so that a snippet cannot
    put them back with sys.path.append.
    """
    probe = "import json, site; print(json.dumps(site.getsitepackages()))"
    try:
        done = subprocess.run(
            [str(python), "-I", "-c", probe], capture_output=True, timeout=30, check=True
        )
        found = [Path(p) for p in json.loads(done.stdout)]
    except (OSError, ValueError, subprocess.SubprocessError):
        return ()
    return tuple(p.resolve() for p in found if p.is_dir())


@cache
def _bwrap_has_size() -> bool:
    """Whether this bwrap can cap a tmpfs (`--size`; older bubblewraps lack it)."""
    try:
        done = subprocess.run(["bwrap", "--help"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return b"--size" in done.stdout + done.stderr


def _scratch_mounts(workdir: Path, roots: list[Path], disk_bytes: int) -> list[str]:
    """The writable space: the working folder and /tmp, one size-capped tmpfs for both.

    Memory-backed on purpose: the host disk never fills, and the space goes away with
    the sandbox. Without `--size` the host folder is bound instead (capped per file only).
    """
    tmp = Path("/tmp")
    if not _bwrap_has_size():
        mounts = ["--bind", str(workdir), str(workdir)]
    elif _under(workdir, tmp):
        return ["--size", str(disk_bytes), "--tmpfs", "/tmp", "--dir", str(workdir)]
    else:
        mounts = ["--size", str(disk_bytes), "--tmpfs", str(workdir)]
    if not _under(workdir, tmp) and not any(_under(root, tmp) for root in roots):
        mounts += ["--symlink", str(workdir), "/tmp"]  # /tmp is the working folder too
    return mounts


def _bwrap_prefix(workdir: Path, python: Path, limits: CodeLimits) -> list[str]:
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
    # --dev's /dev is an unlimited tmpfs: give /dev/shm its own capped one, and make the
    # rest read-only (device nodes such as /dev/null stay usable).
    args += ["--dev", "/dev"]
    if _bwrap_has_size():
        args += ["--size", str(limits.shm_mb * 1024 * 1024), "--tmpfs", "/dev/shm"]
    args += ["--remount-ro", "/dev", "--proc", "/proc"]
    roots = _python_roots(python)
    args += _scratch_mounts(workdir, roots, limits.disk_mb * 1024 * 1024)
    # After the scratch tmpfs, so neither the interpreter nor the workdir can be hidden by it.
    for root in roots:
        args += ["--ro-bind", str(root), str(root)]
    visible = [Path("/usr"), *roots]
    for site_dir in _site_dirs(python):
        if any(_under(site_dir, root) for root in visible):
            args += ["--tmpfs", str(site_dir), "--remount-ro", str(site_dir)]
    args += [
        "--remount-ro", "/",
        "--chdir", str(workdir),
        "--unshare-all",  # net, pid, ipc, uts, cgroup (user: below)
        "--unshare-user", "--disable-userns",
        "--cap-drop", "ALL",
        "--die-with-parent",
        "--new-session",
    ]  # fmt: skip
    return args


def _unshare_prefix(pid_ns: bool) -> list[str]:
    """unshare's arguments; with `pid_ns` the code also gets its own pid namespace.

    Then unshare forks, the supervisor is PID 1 of the namespace and the snippet PID 2:
    host processes are invisible to it (/proc is remounted) and cannot be signalled, and
    everything it started dies when the supervisor ends.
    """
    base = ["unshare", "--net"]
    if os.geteuid() != 0:
        base[1:1] = ["--user", "--map-root-user"]
    if pid_ns:
        # --ipc too: SysV shared memory the code makes dies with it instead of staying.
        base += ["--pid", "--fork", "--mount-proc", "--kill-child", "--ipc"]
    return base


def _starts(make_prefix: Callable[[Path], list[str]]) -> bool:
    """Whether a sandbox command starts Python here (containers often forbid namespaces)."""
    python = sandbox_python()
    with tempfile.TemporaryDirectory(prefix="foreman-probe-") as tmp:
        cmd = make_prefix(Path(tmp)) + [str(python), *PYTHON_FLAGS, "-c", "pass"]
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
        log.debug("sandbox probe %s failed: %s", cmd[0], done.stderr.decode(errors="replace"))
    return done.returncode == 0


@cache
def _unshare_pid_ns() -> bool:
    return shutil.which("unshare") is not None and _starts(lambda _: _unshare_prefix(True))


@cache
def sandbox_works(kind: str) -> bool:
    """Whether `kind` is installed *and* starts here (containers often forbid namespaces)."""
    if kind == "none":
        return True
    if shutil.which(kind) is None:
        return False
    if kind == "unshare":
        return _unshare_pid_ns() or _starts(lambda _: _unshare_prefix(False))
    probe = CodeLimits(timeout_s=30, cpu_s=30, memory_mb=512, max_output_bytes=1, disk_mb=8)
    return _starts(lambda tmp: _bwrap_prefix(tmp.resolve(), sandbox_python(), probe))


def _command(kind: str, workdir: Path, python: Path, limits: CodeLimits) -> list[str]:
    """The full command line: sandbox, supervisor where needed, then the interpreter."""
    snippet = [str(python), *PYTHON_FLAGS, "-"]
    if kind == "bwrap":
        return _bwrap_prefix(workdir, python, limits) + snippet  # bwrap's init is the parent
    supervised = [str(python), *PYTHON_FLAGS, "-c", SUPERVISOR, *snippet]
    if kind == "unshare":
        return _unshare_prefix(_unshare_pid_ns()) + supervised
    return supervised


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


def _sandbox_text(kind: str, limits: CodeLimits) -> str:
    """One line on what `kind` isolates here (it depends on bwrap's and unshare's abilities)."""
    if kind == "bwrap":
        if _bwrap_has_size():
            writable = (
                f"writable only: the working folder and /tmp ({limits.disk_mb} MB tmpfs, shared) "
                f"and /dev/shm ({limits.shm_mb} MB tmpfs)"
            )
        else:
            writable = "writable only: the working folder (host disk; this bwrap lacks --size)"
        return (
            "bwrap: no network, own pid/ipc/uts/user namespaces, all capabilities dropped; "
            f"read-only /usr and Python prefix, site-packages hidden, host files hidden; {writable}"
        )
    if kind == "unshare":
        pids = "own pid namespace" if _unshare_pid_ns() else "host processes visible"
        return (
            f"unshare: no network, {pids}; the host filesystem is visible and writable "
            "(no filesystem isolation)"
        )
    return (
        "NO SANDBOX: network and host filesystem are reachable (install bubblewrap for isolation)"
    )


def _describe(kind: str, limits: CodeLimits) -> str:
    return (
        f"{_sandbox_text(kind, limits)}; limits: wall {limits.timeout_s:g}s, cpu {limits.cpu_s}s, "
        f"memory {limits.memory_mb} MB per process, files {CODE_MAX_FILE_BYTES // (1024 * 1024)} MB "
        f"each, output {limits.max_output_bytes} bytes per stream; stdlib only (python -I -S), "
        "clean env, temp working folder"
    )


def isolation_report(limits: CodeLimits | None = None) -> str:
    """Plain words on what `run_python` isolates on this machine, and what it does not.

    The sizes quoted are `limits`', by default those of the current settings.
    """
    if limits is None:
        from foreman.settings import get_settings  # lazily: importing tools reads no settings

        limits = CodeLimits.from_settings(get_settings())
    kind = choose_sandbox()
    lines = [f"run_python sandbox on this machine: {kind}", f"  {_sandbox_text(kind, limits)}."]
    lines.append(
        "  Always: `python -I -S` of the base interpreter (the standard library only; no "
        "site-packages), a fresh temp working folder deleted afterwards, environment reduced "
        "to PATH/LANG/HOME/TMPDIR, rlimits on CPU time, memory (address space), file size, "
        "open files and core dumps, a wall timeout that kills the process group, stdout/stderr "
        "capped; the code's parent is bwrap's init or a supervisor, never Foreman."
    )
    not_isolated = []
    if kind != "bwrap":
        not_isolated.append(
            "the host filesystem (readable, and writable with this user's rights; "
            "site-packages can be added back to sys.path by hand)"
        )
    if kind == "none":
        not_isolated.append("the network (including localhost services)")
    if kind == "none" or (kind == "unshare" and not _unshare_pid_ns()):
        not_isolated.append(
            "this user's other processes (the code can signal them by pid, e.g. Foreman's; "
            "processes that start their own session can outlive the timeout)"
        )
    if os.geteuid() == 0:
        not_isolated.append(
            "the number of processes (RLIMIT_NPROC does not bind root; a fork bomb is "
            "stopped only by the timeout)"
        )
    not_isolated.append(
        "total CPU and memory across child processes (limits are per process; no cgroups)"
    )
    not_isolated.append(
        "memory in memfd files (32 MB each, 256 open files) and SysV shared memory via ctypes: "
        "the address-space limit does not count them"
        + ("" if kind == "none" else " (freed when the sandbox ends)")
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
    """Run `code` with `python -I -S` in the best sandbox available, within `limits`.

    `sandbox` forces one kind ('bwrap', 'unshare', 'none'); 'auto' picks the strongest that
    works here. The code is given on stdin, so the working folder starts empty.
    """
    kind = choose_sandbox(sandbox)
    if kind == "none":
        log.warning("run_python has no sandbox here: the code can reach the network and files")
    python = sandbox_python()
    with tempfile.TemporaryDirectory(prefix="foreman-code-") as tmp:
        workdir = Path(tmp).resolve()
        cmd = _command(kind, workdir, python, limits)
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
