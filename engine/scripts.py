"""Script steps: the user's own scripts run as subprocesses, with a timeout, inside the plan.

The exit code sets the status (non-zero raises, so Prefect retries as configured);
stdout and stderr go to the run's log; the result is the last JSON line of stdout, or
the exit code and the tail of the output, so later conditions and agents can use it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from foreman.engine.plan import ScriptStep
from foreman.errors import ScriptFailed

TAIL_CHARS = 2_000
logger = logging.getLogger("foreman.scripts")




def _log() -> logging.Logger | logging.LoggerAdapter:
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:  # noqa: BLE001  (outside a Prefect run)
        return logger


def command_for(step: ScriptStep, base: Path) -> list[str]:
    path = Path(step.path).expanduser()
    if not path.is_absolute():
        path = (base / path).resolve()
    return [sys.executable, str(path), *step.args] if path.suffix == ".py" else [str(path), *step.args]


def run_script(step: ScriptStep, *, timeout_s: float, base: Path, inputs: dict[str, Any] | None = None) -> Any:
    """Run one script step; return its result or raise `ScriptFailed`.

    Earlier results reach the script as JSON in FOREMAN_INPUTS.
    """
    cwd = Path(step.cwd).expanduser() if step.cwd else base
    if not cwd.is_absolute():
        cwd = (base / cwd).resolve()
    env = {**os.environ, **step.env, "FOREMAN_INPUTS": json.dumps(inputs or {}, default=str)}
    command = command_for(step, base)
    log = _log()
    log.info("running %s (cwd %s)", " ".join(command), cwd)
    try:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, start_new_session=True)
    except OSError as exc:
        raise ScriptFailed(f"{step.path} could not start: {exc}") from None
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the script and anything it started
        stdout, _ = process.communicate()
        raise ScriptFailed(
            f"{step.path} ran past its timeout of {timeout_s:g}s and was killed; output tail: {stdout[-TAIL_CHARS:]!r}"
        ) from None
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
