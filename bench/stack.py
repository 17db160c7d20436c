"""What the ControlFlow + Prefect stack costs before any model thinks.

Prints: import times, cold start to the first flow result (fresh process, existing
Prefect database), and the per-task overhead of a one-turn ControlFlow task run the
Foreman way (audited, inside a Prefect flow) against a plain Prefect task measured
in the same run. The last line is JSON.

    .venv/bin/python bench/stack.py [--tasks 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COLD_SCRIPT = """
import time, sys
t0 = time.perf_counter()
import foreman
import controlflow as cf
from prefect import flow
from foreman.agents.scripted import ScriptedChatModel, succeed
from foreman.cf_adapter.taskrun import run_task
from foreman.tools.audit import audit_log
t_import = time.perf_counter() - t0

@flow
def one():
    task = cf.Task("say 1", result_type=int, agents=[cf.Agent(name="a", model=ScriptedChatModel(replies=[succeed(1)]))])
    return run_task(task, audit=audit_log())

assert one() == 1
print(t_import, time.perf_counter() - t0)
"""


def cold_start(env: dict[str, str]) -> tuple[float, float]:
    """Seconds to import the stack, and to the first flow result, in a fresh process."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", COLD_SCRIPT], env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    t_import, _ = (float(x) for x in out.stdout.split()[-2:])
    return t_import, wall


def import_controlflow(env: dict[str, str]) -> float:
    code = "import time; t=time.perf_counter(); import controlflow; print(time.perf_counter()-t)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def per_task(n: int) -> dict[str, float]:
    import controlflow as cf
    from prefect import flow, task

    from foreman.agents.scripted import ScriptedChatModel, succeed
    from foreman.cf_adapter.taskrun import run_task
    from foreman.tools.audit import audit_log

    model = ScriptedChatModel(responder=lambda turn: succeed(1))
    log = audit_log()

    @task
    def plain(i: int) -> int:
        return i

    @flow
    def plain_tasks() -> float:
        t = time.perf_counter()
        for i in range(n):
            plain(i)
        return time.perf_counter() - t

    @flow
    def cf_tasks() -> float:
        t = time.perf_counter()
        for i in range(n):
            job = cf.Task(f"say 1 ({i})", result_type=int, agents=[cf.Agent(name="a", model=model)])
            assert run_task(job, audit=log) == 1
        return time.perf_counter() - t

    cf_tasks()  # warm-up: first-use imports and server connections
    plain_tasks()
    plain_s = plain_tasks()
    cf_s = cf_tasks()
    return {
        "plain_prefect_task_ms": plain_s / n * 1000,
        "cf_one_turn_task_ms": cf_s / n * 1000,
        "cf_over_plain_ratio": cf_s / plain_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="foreman-bench-"))
    os.environ.setdefault("FOREMAN_HOME", str(home / "foreman"))
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    import foreman  # noqa: F401  (offline env before Prefect loads)

    env = dict(os.environ)
    figures: dict[str, float] = {}
    figures["import_controlflow_s"] = import_controlflow(env)
    # The first run on a fresh PREFECT_HOME migrates the database; measure it, then a warm cold start.
    _, figures["first_run_fresh_db_s"] = cold_start(env)
    figures["import_stack_s"], figures["cold_start_to_first_result_s"] = cold_start(env)
    figures.update(per_task(args.tasks))
    figures["tasks"] = args.tasks
    for key, value in figures.items():
        print(f"{key:32} {value:10.3f}")
    print(json.dumps({k: round(v, 4) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
