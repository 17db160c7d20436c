"""What a workflow costs over running the same scripts by hand, and what it gains in parallel.

Each script sleeps `--work` seconds and prints a JSON line. In the same run:
- by hand: the scripts one after another with `subprocess.run` (the user's starting point);
- a chain of N script steps through `run_workflow` (the per-step overhead of Foreman + Prefect);
- a fan-out of N independent steps and a join (the parallel speedup over the by-hand loop).
Times are the engine's own (`result.duration_s`, from load to last step) and the whole flow
call (with Prefect's run start and finish). The last line is JSON.

    .venv/bin/python bench/workflow.py [--steps 8] [--work 0.5]
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

HOME = Path(tempfile.mkdtemp(prefix="foreman-bench-workflow-"))
os.environ.setdefault("FOREMAN_HOME", str(HOME / "foreman"))
os.environ.setdefault("PREFECT_HOME", str(HOME / "prefect"))

import foreman  # noqa: F401  (offline env first)

SCRIPT = "import json, sys, time\ntime.sleep(float(sys.argv[1]))\nprint(json.dumps({'ok': True}))\n"


def write_workflow(folder: Path, name: str, steps: int, work: float, parallel: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "work.py").write_text(SCRIPT)
    lines = [f"name: {name}", "steps:"]
    for i in range(steps):
        deps = "" if parallel or i == 0 else f", depends_on: [s{i - 1}]"
        lines.append(f"  - {{id: s{i}, script: {{path: work.py, args: ['{work}']}}, retries: 0{deps}}}")
    if parallel:
        lines.append(f"  - {{id: join, script: {{path: work.py, args: ['0']}}, depends_on: [{', '.join(f's{i}' for i in range(steps))}]}}")
    path = folder / "workflow.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def by_hand(folder: Path, steps: int, work: float) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        subprocess.run([sys.executable, str(folder / "work.py"), str(work)], check=True, capture_output=True)
    return time.perf_counter() - started


def through_flow(path: Path, concurrency: int) -> tuple[float, float]:
    from foreman.flows.workflow import run_workflow

    started = time.perf_counter()
    result = run_workflow(path=str(path), max_concurrency=concurrency)
    assert result.status == "COMPLETED", result.statuses
    return result.duration_s, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--work", type=float, default=0.5)
    args = parser.parse_args()
    n, work = args.steps, args.work

    chain = write_workflow(HOME / "chain", "chain", n, work, parallel=False)
    fan = write_workflow(HOME / "fan", "fan", n, work, parallel=True)
    through_flow(write_workflow(HOME / "warm", "warm", 1, 0, parallel=False), 1)  # database, imports

    hand = by_hand(chain.parent, n, work)
    chain_engine, chain_flow = through_flow(chain, concurrency=1)
    fan_engine, fan_flow = through_flow(fan, concurrency=n)
    figures = {
        "steps": n, "work_s": work,
        "by_hand_s": round(hand, 2),
        "chain_engine_s": round(chain_engine, 2), "chain_flow_s": round(chain_flow, 2),
        "overhead_ms_per_step": round((chain_engine - hand) / n * 1000, 1),
        "chain_ratio_vs_by_hand": round(chain_engine / hand, 3),
        "fan_engine_s": round(fan_engine, 2), "fan_flow_s": round(fan_flow, 2),
        "fan_speedup_vs_by_hand": round(hand / fan_engine, 2),
    }
    for key, value in figures.items():
        print(f"{key:>24}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
