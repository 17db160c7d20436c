"""Script steps: the user's own scripts run as subprocesses, with a timeout, inside the plan.

The exit code sets the status (non-zero raises, so Prefect retries as configured);
stdout and stderr go to the run's log; the result is the last JSON line of stdout, or
the exit code and the tail of the output, so later conditions and agents can use it.

**Environment.** A script gets a clean environment, not Foreman's: `PATH`, `HOME`, `LANG`,
`LANGUAGE`, every `LC_*`, `TZ`, `TMPDIR` and the Python bits a script may need to run
(`VIRTUAL_ENV`, `PYTHONPATH`, `PYTHONHOME`, `PYTHONUTF8`, `PYTHONIOENCODING`), each only if
Foreman has it; then exactly the variables the step's `env:` names (which win, and carry
`FOREMAN_PARAMS` for a workflow with params); then `FOREMAN_INPUTS`, the earlier results as
JSON. Nothing else is inherited: no `OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, `FOREMAN_*`,
`PREFECT_*` or cloud credentials. A script that needs a value names it in `env:`.

**Dying with the runner.** A script must never outlive the process that runs the plan: if
that process is killed (`kill -9`, OOM, a worker restart), a script still running would
finish its side effect and a resume would run it again. So every script is started through
a tiny guard, in its own session: `python -I -S engine/scripts.py FD COMMAND` (this file's
`guard`, standard library only; about 40 ms a step):

* the guard holds the read end of a *lifeline* pipe whose write end only the runner holds.
  The kernel closes it when the runner process dies, however it dies; the guard sees EOF
  and SIGKILLs its whole process group: the script and anything it started.
* the script is the guard's child with `PR_SET_PDEATHSIG=SIGKILL` (Linux), so killing the
  guard alone kills the script too. The guard is single-threaded and its one thread lives
  until the script ends, so the death signal cannot fire early. Set directly in the runner
  it could: `PDEATHSIG` follows the *thread* that forked, and scripts start from Prefect's
  worker threads, and `preexec_fn` in a threaded process may deadlock; the guard has neither
  problem, and unlike `PDEATHSIG` alone it also takes the script's own children down.
* on a timeout the runner SIGKILLs the guard's process group (guard, script, and the
  script's children), as before; on any exception while waiting (a cancelled task), too.

The guard passes the script's exit code (or its killing signal) through unchanged. Not
covered: a process the script detaches into a session of its own (`setsid`, a daemon), and
anything a script leaves running after it exits normally (as before).
"""

from __future__ import annotations

import os
import select
import signal
import sys

GUARD_MARK = "foreman-script-guard:"
GUARD_CANNOT_START = 127


def guard(lifeline: int, command: list[str]) -> None:
    """The guard's whole life (`python -I -S engine/scripts.py LIFELINE_FD COMMAND...`).

    Standard library only and nothing above this function's imports, so the guard starts
    in ~30 ms without site-packages. Never returns: exits as the script did."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except Exception:  # noqa: BLE001  (not Linux: the lifeline still works)
        prctl = None
    me = os.getpid()
    status_r, status_w = os.pipe()  # close-on-exec: EOF without a word means exec worked
    pid = os.fork()
    if pid == 0:  # the script-to-be
        try:
            os.close(status_r)
            os.close(lifeline)
            if prctl is not None:
                prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG: SIGKILL when the guard dies
            if os.getppid() != me:  # the guard died before that took effect
                os._exit(137)
            os.execv(command[0], command)
        except BaseException as exc:  # noqa: BLE001
            try:
                why = str(exc) if getattr(exc, "filename", None) else f"{exc}: {command[0]!r}"
                os.write(status_w, why.encode(errors="replace"))
            finally:
                os._exit(GUARD_CANNOT_START)
    os.close(status_w)
    failure = b""
    while chunk := os.read(status_r, 4096):
        failure += chunk
    os.close(status_r)
    if failure:
        os.waitpid(pid, 0)
        os.write(2, f"{GUARD_MARK} could not start: ".encode() + failure + b"\n")
        os._exit(GUARD_CANNOT_START)
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd (old kernel, not Linux): poll
        pidfd = None
    watch = [lifeline] if pidfd is None else [lifeline, pidfd]
    while True:
        try:
            ready = select.select(watch, [], [], 0.2 if pidfd is None else None)[0]
        except InterruptedError:
            ready = []
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if lifeline in ready and not os.read(lifeline, 64):  # EOF: the runner is gone
            os.killpg(os.getpgrp(), signal.SIGKILL)  # the script, its children, and this guard
    if os.WIFSIGNALED(status):  # die of the same signal, so the runner sees what the script saw
        sig = os.WTERMSIG(status)
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file for the guard
        except Exception:  # noqa: BLE001, S110
            pass
        signal.signal(sig, signal.SIG_DFL)
        os.kill(me, sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    guard(int(sys.argv[1]), sys.argv[2:])

# isort: split

import json
import logging
import subprocess
from pathlib import Path
from typing import Any, Iterable

from foreman.engine.plan import ScriptStep, SubTask
from foreman.errors import ScriptFailed

TAIL_CHARS = 2_000
logger = logging.getLogger("foreman.scripts")
GUARD_FILE = str(Path(__file__).resolve())

# What a script inherits from Foreman's environment (when set); everything else is dropped.
INHERITED = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
             "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONUTF8", "PYTHONIOENCODING")
INHERITED_PREFIXES = ("LC_",)


def _log() -> logging.Logger | logging.LoggerAdapter:
    if "prefect" not in sys.modules:
        return logger  # no Prefect loaded, so no Prefect run (and no seconds-long import)
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:  # noqa: BLE001  (outside a Prefect run)
        return logger


def script_file(step: ScriptStep, base: Path) -> Path:
    """The file a script step runs (relative paths are from `base`)."""
    path = Path(step.path).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def command_for(step: ScriptStep, base: Path) -> list[str]:
    path = script_file(step, base)
    return [sys.executable, str(path), *step.args] if path.suffix == ".py" else [str(path), *step.args]


def code_paths(tasks: Iterable[SubTask], base: Path) -> tuple[Path, ...]:
    """What the script steps among `tasks` execute: each script file, and for a Python script
    its folder too (Python imports a module beside the script before any other)."""
    found: list[Path] = []
    for task in tasks:
        if task.script is None:
            continue
        path = script_file(task.script, base).resolve()
        found += [path, path.parent] if path.suffix == ".py" else [path]
    return tuple(dict.fromkeys(found))


def script_env(step: ScriptStep, inputs: dict[str, Any] | None = None,
               parent: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a script step runs with: the clean base, the step's `env:`, its inputs."""
    parent = dict(os.environ) if parent is None else parent
    base = {k: v for k, v in parent.items() if k in INHERITED or k.startswith(INHERITED_PREFIXES)}
    return {**base, **step.env, "FOREMAN_INPUTS": json.dumps(inputs or {}, default=str)}


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the guard is the group leader: guard, script, its children
    except ProcessLookupError:
        pass


def run_script(step: ScriptStep, *, timeout_s: float, base: Path, inputs: dict[str, Any] | None = None) -> Any:
    """Run one script step; return its result or raise `ScriptFailed`.

    Earlier results reach the script as JSON in FOREMAN_INPUTS.
    """
    cwd = Path(step.cwd).expanduser() if step.cwd else base
    if not cwd.is_absolute():
        cwd = (base / cwd).resolve()
    env = script_env(step, inputs)
    command = command_for(step, base)
    log = _log()
    log.info("running %s (cwd %s)", " ".join(command), cwd)
    lifeline, keep_alive = os.pipe()  # both close-on-exec; only the guard gets `lifeline`
    try:
        process = subprocess.Popen([sys.executable, "-I", "-S", GUARD_FILE, str(lifeline), *command],
                                   cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, start_new_session=True, pass_fds=(lifeline,))
    except OSError as exc:
        os.close(keep_alive)
        raise ScriptFailed(f"{step.path} could not start: {exc}") from None
    finally:
        os.close(lifeline)
    try:
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process)  # the script and anything it started
            stdout, _ = process.communicate()
            raise ScriptFailed(
                f"{step.path} ran past its timeout of {timeout_s:g}s and was killed; "
                f"output tail: {stdout[-TAIL_CHARS:]!r}"
            ) from None
        except BaseException:  # cancelled or interrupted while waiting: never leave the script behind
            _kill_group(process)
            process.wait()
            raise
    finally:
        os.close(keep_alive)
    if process.returncode == GUARD_CANNOT_START and stderr.startswith(GUARD_MARK):
        raise ScriptFailed(f"{step.path} {stderr[len(GUARD_MARK):].strip()}")
    done = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    for line in done.stdout.splitlines():
        log.info("%s | %s", Path(step.path).name, line)
    for line in done.stderr.splitlines():
        log.warning("%s ! %s", Path(step.path).name, line)
    if done.returncode != 0:
        raise ScriptFailed(f"{step.path} exited {done.returncode}; stderr tail: {done.stderr[-TAIL_CHARS:]!r}")
    for line in reversed(done.stdout.strip().splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return {"exit_code": done.returncode, "output_tail": done.stdout[-TAIL_CHARS:]}
