"""How `run_python` keeps a snippet from the host: sandbox command lines, and words for them.

Its own module because what isolation a machine allows is a question of its own, asked
apart from any run: probing which sandboxes start here, building their command-line
prefixes (mounts, tmpfs sizes, hidden site-packages) and saying plainly what each one
does and does not isolate (`isolation_report`, shown by `foreman setup`). Running the
snippet inside the chosen sandbox is `foreman.tools.code`'s job.

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
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Literal

from foreman.tools.code_limits import CODE_MAX_FILE_BYTES, CodeLimits

log = logging.getLogger(__name__)

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
PYTHON_FLAGS = ("-I", "-S")  # isolated mode, and no `site`: the standard library only
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group")

Sandbox = Literal["auto", "bwrap", "unshare", "none"]


# --- the interpreter and its environment ------------------------------------------


def sandbox_python() -> Path:
    """The base interpreter behind this (virtual) environment; run with -I -S: stdlib only."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return Path(base).resolve()


def _clean_env(workdir: Path) -> dict[str, str]:
    """The whole environment a snippet (or a probe) gets: no API keys, no FOREMAN_*/OPENAI_*."""
    return {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "HOME": str(workdir), "TMPDIR": str(workdir)}


# --- the sandboxes ----------------------------------------------------------------


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


# --- choosing one, and saying what it isolates ------------------------------------


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
