"""How close the engine gets to the critical path, and what it costs per sub-task.

A scripted model sleeps `--latency` seconds per call and completes each sub-task in
one call. Generated graphs: a chain, a wide fan-out/fan-in, a 20-node width-8 DAG and
a 100-node DAG. For the 20-node DAG the same sub-tasks also run one after another
(max_concurrency=1) and as one plain `cf.run_tasks` call, in the same run, so the
speedups are ratios. The last line is JSON.

    .venv/bin/python bench/planner.py [--latency 1.0] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

HOME = Path(tempfile.mkdtemp(prefix="foreman-bench-planner-"))
os.environ.setdefault("FOREMAN_HOME", str(HOME / "foreman"))
os.environ.setdefault("PREFECT_HOME", str(HOME / "prefect"))

import foreman  # noqa: F401  (offline env first)
from foreman.engine.plan import Plan, SubTask


def sub(i: int, deps: list[int]) -> SubTask:
    return SubTask(id=f"n{i}", title=f"NODE-N{i}", instructions=f"Do n{i}.", agent="generalist",
                   depends_on=[f"n{d}" for d in deps], retries=0)


def chain(n: int) -> Plan:
    return Plan(tasks=[sub(i, [i - 1] if i else []) for i in range(n)])


def fan(width: int) -> Plan:
    return Plan(tasks=[sub(0, []), *[sub(i, [0]) for i in range(1, width + 1)], sub(width + 1, list(range(1, width + 1)))])


def layered_dag(n: int, width: int, seed: int = 7) -> Plan:
    """Layers of at most `width` nodes; each node depends on 1-2 nodes of the layer above."""
    rng = random.Random(seed)
    layers: list[list[int]] = []
    i = 0
    while i < n:
        size = min(width, n - i) if layers else 1
        layers.append(list(range(i, i + size)))
        i += size
    tasks = []
    for depth, layer in enumerate(layers):
        for node in layer:
            deps = [] if depth == 0 else rng.sample(layers[depth - 1], k=min(len(layers[depth - 1]), rng.choice([1, 2])))
            tasks.append(sub(node, sorted(deps)))
    return Plan(tasks=tasks)


def critical_path(plan: Plan) -> int:
    level: dict[str, int] = {}
    for t in plan.tasks:  # generated in topological order
        level[t.id] = 1 + max((level[d] for d in t.depends_on), default=0)
    return max(level.values())


def run_engine(plan: Plan, latency: float, concurrency: int) -> dict[str, float]:
    from prefect import flow
    from prefect.task_runners import ThreadPoolTaskRunner

    from foreman.agents.models import use_model
    from foreman.agents.registry import registry
    from foreman.agents.scripted import ScriptedChatModel, succeed
    from foreman.engine.cf_runner import ControlFlowRunner, build_scope
    from foreman.engine.executor import Budgets, Engine, NodeStatus
    from foreman.engine.policy import RunPolicy
    from foreman.engine.store import run_store
    from foreman.engine.validate import validate_plan
    from foreman.settings import get_settings
    from foreman.tools.catalog import ToolEnv

    settings = get_settings()
    env = ToolEnv.from_settings(settings)
    policy = RunPolicy.build(allowed_tools=["notify_user"], workspace=env.workspace.root)
    scope = build_scope(registry, policy, max_nodes=200, max_depth=200)
    model = ScriptedChatModel(responder=lambda turn: succeed("ok"), latency_s=latency)
    runner = ControlFlowRunner(env, registry, settings, policy=policy)
    engine = Engine(runner, scope, run_store(), Budgets(max_llm_calls=10_000, max_concurrency=concurrency))

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=concurrency))
    def go():
        started = time.perf_counter()
        report = engine.run(validate_plan(plan, scope), f"bench-{time.time_ns()}")
        return report, time.perf_counter() - started

    cpu0, t0 = time.process_time(), time.perf_counter()
    with use_model(model):
        report, engine_wall = go()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert all(o.status == NodeStatus.COMPLETED for o in report.outcomes.values()), report.stopped_by
    n, cp = len(plan.tasks), critical_path(plan)
    return {
        "nodes": n, "critical_path": cp, "flow_wall_s": round(wall, 3), "engine_wall_s": round(engine_wall, 3),
        # the graph's own time (engine.run), and the whole flow run including Prefect's start/finish
        "critical_path_ratio": round(engine_wall / (cp * latency), 3) if latency else 0.0,
        "flow_critical_path_ratio": round(wall / (cp * latency), 3) if latency else 0.0,
        "overhead_ms_per_node": round((engine_wall - cp * latency) * 1000 / n, 1),
        "cpu_ms_per_node": round(cpu * 1000 / n, 1),
        "calls_per_node": round(report.usage.llm_calls / n, 3),
    }


def run_plain_controlflow(plan: Plan, latency: float) -> float:
    """The same sub-tasks as one `cf.run_tasks` call (ControlFlow's own scheduling)."""
    import controlflow as cf
    from prefect import flow

    from foreman.agents.scripted import ScriptedChatModel, succeed

    model = ScriptedChatModel(responder=lambda turn: succeed("ok"), latency_s=latency)
    agent = cf.Agent(name="generalist", model=model)

    @flow
    def go() -> float:
        tasks: dict[str, cf.Task] = {}
        for t in plan.tasks:
            tasks[t.id] = cf.Task(t.title, result_type=str, agents=[agent],
                                  depends_on=[tasks[d] for d in t.depends_on])
        t0 = time.perf_counter()
        cf.run_tasks(list(tasks.values()), max_llm_calls=10 * len(tasks))
        return time.perf_counter() - t0

    return go()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="skip the 100-node DAG and the sequential baseline")
    args = parser.parse_args()
    lat = args.latency

    run_engine(chain(2), 0.0, 2)  # warm-up: database migration, imports
    dag20 = layered_dag(20, 8)
    figures: dict[str, dict] = {
        "chain10": run_engine(chain(10), lat, args.concurrency),
        "fan8": run_engine(fan(8), lat, args.concurrency),
        "dag20_w8": run_engine(dag20, lat, args.concurrency),
    }
    if not args.quick:
        figures["dag100_w8"] = run_engine(layered_dag(100, 8), lat, args.concurrency)
        figures["dag20_sequential"] = run_engine(dag20, lat, 1)
        figures["dag20_plain_cf_run_tasks_s"] = {"wall_s": round(run_plain_controlflow(dag20, lat), 3)}
    for name, row in figures.items():
        print(f"{name:28} " + "  ".join(f"{k}={v}" for k, v in row.items()))

    headline = {
        "latency_s": lat,
        "critical_path_ratio": figures["dag20_w8"]["critical_path_ratio"],
        "overhead_ms_per_node": figures["dag20_w8"]["overhead_ms_per_node"],
        "calls_per_node": figures["dag20_w8"]["calls_per_node"],
        "flow_critical_path_ratio": figures["dag20_w8"]["flow_critical_path_ratio"],
    }
    if not args.quick:
        headline["speedup_vs_sequential"] = round(figures["dag20_sequential"]["engine_wall_s"] / figures["dag20_w8"]["engine_wall_s"], 2)
        headline["speedup_vs_plain_cf"] = round(figures["dag20_plain_cf_run_tasks_s"]["wall_s"] / figures["dag20_w8"]["engine_wall_s"], 2)
        headline["dag100_critical_path_ratio"] = figures["dag100_w8"]["critical_path_ratio"]
    print(json.dumps({"headline": headline, "graphs": figures}))


if __name__ == "__main__":
    main()
