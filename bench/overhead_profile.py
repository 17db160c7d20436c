"""Per-node overhead of ControlFlow tasks run as concurrent Prefect tasks, and what cuts it.

Each node of the measured workloads is one ControlFlow task run the Foreman way
(`foreman.cf_adapter.taskrun.run_task`: audited, logged) inside its own Prefect task, submitted
with `.submit()` from one Prefect flow (default ThreadPoolTaskRunner). The model is
`ScriptedChatModel` answering in one turn after `latency` seconds, so with no overhead
a workload takes exactly its critical path.

Workloads (per variant, in a fresh process, after a warm-up flow that is not timed):
  * wide:  --tasks N independent nodes (critical path = 1 turn), at each --latencies value
  * dag:   20 nodes in layers of 8, 8, 4 (width 8, depth 3; each node waits for two
           upstream results), at the first --latencies value (critical path = 3 turns)

Variants (each cut alone, then together; `foreman.cf_adapter.speedups` implements the cuts):
  baseline         ControlFlow 0.12.1 as shipped
  artifacts_off    only ControlFlow's markdown artifacts off
  nested_off       only ControlFlow's nested task runs off
  heartbeat_join_off  only the flow engine's end-of-run heartbeat-thread join off
  shared_history   stock ControlFlow history: each node runs in a plain cf.Flow(), whose
                   history is ControlFlow's process-wide InMemoryHistory (what run_task
                   did before it gave each run a private history); shows the race
  speedups         apply_speedups(): all three cuts (the default)
  speedups_no_api_logs  speedups + PREFECT_LOGGING_TO_API_ENABLED=false (for reference:
                   Foreman keeps API logs, the UI needs them)

Figures: wall time of the flow call and of the nodes inside it, both divided by the
critical path; client CPU (this process, all threads) and Prefect server CPU per node;
failed nodes; how far apart the nodes' model calls started. Medians over --repeats.
A private PREFECT_HOME is used; its database is migrated when the server starts, which
is reported (server_start_s) and never part of a timing. The machine's load average is
printed because wall times on a shared machine are only as good as its quiet.

    .venv/bin/python bench/overhead_profile.py                      # all variants
    .venv/bin/python bench/overhead_profile.py --variants baseline,speedups --repeats 5
    .venv/bin/python bench/overhead_profile.py --profile            # + where the CPU goes

`--profile` also runs --profile-tasks nodes one after another (latency 0) under
pyinstrument, per variant baseline and speedups, and prints where each node's wall time
goes, by component, in ms per node (shares from the profile, scaled to the unprofiled
wall time per node, as the profiler itself inflates run time).
The last line of output is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VARIANTS = (
    "baseline",
    "artifacts_off",
    "nested_off",
    "heartbeat_join_off",
    "shared_history",
    "speedups",
    "speedups_no_api_logs",
)
DAG_LAYERS = (8, 8, 4)


# --------------------------------------------------------------------------- child


# variant -> (nested_task_runs, artifacts, flow_heartbeat_join): True is the stock behaviour
CUTS: dict[str, tuple[bool, bool, bool]] = {
    "baseline": (True, True, True),
    "shared_history": (True, True, True),
    "artifacts_off": (True, False, True),
    "nested_off": (False, True, True),
    "heartbeat_join_off": (True, True, False),
    "speedups": (False, False, False),
    "speedups_no_api_logs": (False, False, False),
}


def _child_setup(variant: str) -> None:
    if variant == "speedups_no_api_logs":
        os.environ["PREFECT_LOGGING_TO_API_ENABLED"] = "false"
    import foreman
    import foreman.cf_adapter.taskrun  # noqa: F401  (Foreman may apply its default speedups on import)
    from foreman.cf_adapter.speedups import apply_speedups, speedups_state

    # Every variant sets all three switches, whatever Foreman applied by default.
    nested, artifacts, heartbeat_join = CUTS[variant]
    apply_speedups(nested_task_runs=nested, artifacts=artifacts, flow_heartbeat_join=heartbeat_join)
    state = speedups_state()
    assert state == {
        "nested_task_runs_off": not nested,
        "artifacts_off": not artifacts,
        "flow_heartbeat_join_off": not heartbeat_join,
    }, state


def _server_cpu() -> float:
    pid = os.environ.get("FOREMAN_BENCH_SERVER_PID")
    if not pid:
        return 0.0
    import psutil

    try:
        proc = psutil.Process(int(pid))
        procs = [proc, *proc.children(recursive=True)]
        return sum(p.cpu_times().user + p.cpu_times().system for p in procs)
    except psutil.Error:
        return 0.0


def _settle(max_wait_s: float = 60.0) -> None:
    """Wait until the Prefect server has ingested the previous run's events and logs.

    Task-run states reach the server as events, which it writes after the client moved
    on; a flow started while it still works on a backlog waits for it in its first API
    call. Measurements start from a quiet server so that runs do not bill each other.
    """
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        before = _server_cpu()
        time.sleep(0.5)
        if _server_cpu() - before < 0.05:  # under 10% of a core for half a second
            return


def _child(args: argparse.Namespace) -> dict[str, Any]:
    _child_setup(args.variant)

    import controlflow as cf
    from prefect import flow, task

    from foreman.agents.scripted import ScriptedChatModel, succeed
    from foreman.cf_adapter.taskrun import run_task
    from foreman.tools.audit import audit_log

    log = audit_log()
    shared_history = args.variant == "shared_history"
    models: list[ScriptedChatModel] = []
    latency = {"s": 0.0}
    marks: dict[str, float] = {}

    def one_node(label: str, upstream: list[int]) -> int:
        # One model per node: ScriptedChatModel keeps every turn in a pydantic field, and
        # ControlFlow formats str(model) on every call, so a shared one would grow the cost.
        model = ScriptedChatModel(responder=lambda turn: succeed(1), latency_s=latency["s"])
        models.append(model)
        agent = cf.Agent(name=f"agent-{label}", model=model)
        job = cf.Task(f"Say 1 ({label})", result_type=int, agents=[agent])
        if shared_history:
            with cf.Flow():  # default history: ControlFlow's process-wide store
                return run_task(job, audit=log) + sum(upstream) * 0
        return run_task(job, audit=log) + sum(upstream) * 0  # run_task: private history

    @task(task_run_name="node-{label}")
    def node(label: str, upstream: list[int]) -> int:
        return one_node(label, upstream)

    @flow(name="bench-wide")
    def wide(n: int) -> dict[str, Any]:
        t = marks["body_start"] = time.perf_counter()
        futures = [node.submit(str(i), []) for i in range(n)]
        return _collect(futures, t)

    @flow(name="bench-dag")
    def dag() -> dict[str, Any]:
        t = marks["body_start"] = time.perf_counter()
        layers: list[list[Any]] = []
        for depth, width in enumerate(DAG_LAYERS):
            layer = []
            for j in range(width):
                if depth == 0:
                    upstream: list[Any] = []
                else:
                    prev = layers[-1]
                    upstream = [prev[(2 * j) % len(prev)], prev[(2 * j + 1) % len(prev)]]
                layer.append(node.submit(f"{depth}.{j}", upstream))
            layers.append(layer)
        futures = [f for layer in layers for f in layer]
        return _collect(futures, t)

    def _collect(futures: list[Any], started: float) -> dict[str, Any]:
        states = [f.wait() or f.state for f in futures]
        failures = [str(s.message or s.name)[:160] for s in states if not s.is_completed()]
        marks["body_end"] = time.perf_counter()
        return {
            "nodes_wall_s": marks["body_end"] - started,
            "failed": len(failures),
            "failures": failures,
        }

    def measure(
        fn: Any, *fargs: Any, nodes: int, lat: float, critical_turns: int
    ) -> dict[str, Any]:
        latency["s"] = lat
        models.clear()
        _settle()
        s0, c0, w0 = _server_cpu(), time.process_time(), time.perf_counter()
        inner = fn(*fargs)
        w1 = time.perf_counter()
        wall, cpu = w1 - w0, time.process_time() - c0
        _settle()  # the server's work for this run includes the events it ingests afterwards
        server = _server_cpu() - s0
        turns = [t for m in models for t in m.turns]
        starts = sorted(t.started for t in turns)
        out = {
            "flow_wall_s": wall,
            "nodes_wall_s": inner["nodes_wall_s"],
            "flow_start_s": marks["body_start"] - w0,  # flow run created, until its body runs
            "flow_finish_s": w1 - marks["body_end"],  # body returned, until the flow call returns
            "failed": inner["failed"],
            "failures": inner["failures"],
            "cpu_ms_per_node": cpu / nodes * 1000,
            "server_cpu_ms_per_node": server / nodes * 1000,
            "model_call_start_spread_s": (starts[-1] - starts[0]) if starts else 0.0,
        }
        if lat:
            critical = critical_turns * lat
            out["flow_wall_over_critical"] = wall / critical
            out["nodes_wall_over_critical"] = inner["nodes_wall_s"] / critical
            # time beyond the critical path, shared out over the nodes on it
            overhead_s = inner["nodes_wall_s"] - critical
            out["overhead_ms_per_critical_node"] = overhead_s / critical_turns * 1000
        return out

    # warm-up: first-use imports, server connections, Prefect's flow/task registration
    latency["s"] = 0.0
    wide(2)
    dag()

    results: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.repeats):
        for lat in args.latencies:
            key = f"wide{args.tasks}_lat{lat:g}"
            figures = measure(wide, args.tasks, nodes=args.tasks, lat=lat, critical_turns=1)
            results.setdefault(key, []).append(figures)
        lat = args.latencies[0]
        key = f"dag20_lat{lat:g}"
        results.setdefault(key, []).append(
            measure(dag, nodes=sum(DAG_LAYERS), lat=lat, critical_turns=len(DAG_LAYERS))
        )
    summary = {
        key: {
            field: statistics.median(r[field] for r in runs)
            for field in runs[0]
            if field != "failures"
        }
        | {"runs": len(runs)}
        for key, runs in results.items()
    }
    for key, runs in results.items():
        summary[key]["failed_total"] = sum(r["failed"] for r in runs)
        kinds: dict[str, int] = {}
        for r in runs:
            for message in r["failures"]:
                kinds[message] = kinds.get(message, 0) + 1
        summary[key]["failure_kinds"] = kinds
    return summary


# --------------------------------------------------------------------------- profile

# Innermost marker on the stack decides a sample's component. (function, file substring)
COMPONENTS: tuple[tuple[str, str, str], ...] = (
    (
        "visit_collection",
        "prefect/utilities/collections.py",
        "Prefect visit_collection over nested-run parameters",
    ),
    (
        "create_markdown_artifact",
        "controlflow/utilities/prefect.py",
        "ControlFlow artifacts (API call per reply/tool call)",
    ),
    (
        "compile_messages",
        "controlflow/orchestration/orchestrator.py",
        "ControlFlow message compilation (history, tokens)",
    ),
    (
        "compile_prompt",
        "controlflow/orchestration/orchestrator.py",
        "ControlFlow prompt (jinja templates, tool list)",
    ),
    (
        "get_tools",
        "controlflow/orchestration/orchestrator.py",
        "ControlFlow tool objects (completion tools, JSON schemas)",
    ),
    (
        "handle_event",
        "controlflow/orchestration/orchestrator.py",
        "ControlFlow event handlers (Foreman run log + audit)",
    ),
    ("add_events", "controlflow/flows/flow.py", "ControlFlow history writes"),
    (
        "stream",
        "langchain_core/language_models/chat_models.py",
        "LangChain model call (scripted model)",
    ),
    (
        "handle_tool_call",
        "controlflow/tools/tools.py",
        "ControlFlow tool call handling (completion tool)",
    ),
    ("emit", "prefect/logging/handlers.py", "Prefect logging (console + API queue)"),
)
ENGINE_FUNCS = {
    "run_task_sync",
    "run_generator_task_sync",
    "run_task_async",
    "run_generator_task_async",
}


def _profile_child(args: argparse.Namespace) -> dict[str, Any]:
    _child_setup(args.variant)
    import controlflow as cf
    import pyinstrument
    from prefect import flow, task

    from foreman.agents.scripted import ScriptedChatModel, succeed
    from foreman.cf_adapter.taskrun import run_task
    from foreman.tools.audit import audit_log

    log = audit_log()

    @task(task_run_name="node-{i}")
    def node(i: int) -> int:
        model = ScriptedChatModel(responder=lambda turn: succeed(1))
        job = cf.Task(
            f"Say 1 ({i})", result_type=int, agents=[cf.Agent(name=f"agent-{i}", model=model)]
        )
        return run_task(job, audit=log)

    @flow(name="bench-sequential")
    def sequential(n: int) -> tuple[float, float]:
        t, c = time.perf_counter(), time.thread_time()
        for i in range(n):
            node(i)
        return time.perf_counter() - t, time.thread_time() - c

    n = args.profile_tasks
    sequential(2)  # warm-up
    _settle()
    c0 = time.process_time()
    wall, thread_cpu = sequential(n)  # unprofiled reference
    process_cpu = time.process_time() - c0
    _settle()
    profiler = pyinstrument.Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    sequential(n)
    profiler.stop()
    session = profiler.last_session

    buckets: dict[str, float] = {}

    def walk(frame: Any, stack: list[tuple[str, str]]) -> None:
        here = stack + [(frame.function or "", frame.file_path or "")]
        self_time = frame.time - sum(c.time for c in frame.children)
        if self_time > 0:
            buckets[_component(here)] = buckets.get(_component(here), 0.0) + self_time
        for child in frame.children:
            walk(child, here)

    walk(session.root_frame(), [])
    total = sum(buckets.values())
    body = {k: v for k, v in buckets.items() if k != "outside the nodes (flow engine, profiler)"}
    body_total = sum(body.values())
    # pyinstrument samples wall time (waits on the API included), so shares are of the
    # node's wall time; they are scaled to the unprofiled wall time per node.
    per_node_wall_ms = wall / n * 1000
    per_node_cpu_ms = thread_cpu / n * 1000
    breakdown = {
        k: v / body_total * per_node_wall_ms for k, v in sorted(body.items(), key=lambda kv: -kv[1])
    }
    return {
        "variant": args.variant,
        "nodes": n,
        "sequential_wall_ms_per_node": wall / n * 1000,
        "flow_thread_cpu_ms_per_node": per_node_cpu_ms,
        "background_threads_cpu_ms_per_node": (process_cpu - thread_cpu) / n * 1000,
        "profiled_share_outside_nodes": 1 - body_total / total if total else 0.0,
        "breakdown_ms_per_node": breakdown,
    }


def _component(stack: list[tuple[str, str]]) -> str:
    engines = 0
    in_node = False
    label = None
    for function, path in stack:
        if function in ENGINE_FUNCS and "prefect/task_engine.py" in path:
            engines += 1
            label = None
            in_node = True
            continue
        for marker, where, name in COMPONENTS:
            if function == marker and where in path:
                label = name
        if function == "run_task" and path.endswith("foreman/taskrun.py"):
            label = label or "ControlFlow orchestration (other)"
    if not in_node:
        return "outside the nodes (flow engine, profiler)"
    if label is not None:
        return label
    return (
        "Prefect task-run machinery: the node's own run"
        if engines <= 1
        else ("Prefect task-run machinery: nested ControlFlow runs (excl. parameter walk)")
    )


# --------------------------------------------------------------------------- parent


def _start_server() -> tuple[Any, float]:
    from prefect.server.api.server import SubprocessASGIServer

    started = time.perf_counter()
    server = SubprocessASGIServer()
    server.start(timeout=900)
    return server, time.perf_counter() - started


def _run_child(
    mode: str, variant: str, args: argparse.Namespace, env: dict[str, str]
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        mode,
        "--variant",
        variant,
        "--tasks",
        str(args.tasks),
        "--repeats",
        str(args.repeats),
        "--latencies",
        ",".join(f"{x:g}" for x in args.latencies),
        "--profile-tasks",
        str(args.profile_tasks),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"{variant}: child failed ({out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument(
        "--latencies", type=lambda s: [float(x) for x in s.split(",")], default=[1.0, 0.0]
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--profile", action="store_true", help="also print the CPU breakdown per node"
    )
    parser.add_argument("--profile-tasks", type=int, default=30)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(_child(args)))
        return
    if args.profile_child:
        print(json.dumps(_profile_child(args)))
        return

    home = Path(tempfile.mkdtemp(prefix="foreman-overhead-"))
    os.environ["FOREMAN_HOME"] = str(home / "foreman")
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    os.environ.pop("PREFECT_API_URL", None)
    import foreman  # noqa: F401  (offline env before Prefect loads)

    server, server_start_s = _start_server()
    env = dict(
        os.environ,
        PREFECT_API_URL=server.api_url,
        FOREMAN_BENCH_SERVER_PID=str(server.server_process.pid),
    )
    report: dict[str, Any] = {
        "server_start_s": server_start_s,
        "loadavg_start": os.getloadavg()[0],
        "tasks": args.tasks,
        "latencies": args.latencies,
        "repeats": args.repeats,
        "variants": {},
    }
    print(
        f"Prefect server (fresh database, migrated) started in {server_start_s:.1f} s; load {os.getloadavg()[0]:.2f}"
    )
    try:
        for variant in args.variants.split(","):
            result = _run_child("--child", variant, args, env)
            report["variants"][variant] = result
            print(f"\n== {variant}  (load {os.getloadavg()[0]:.2f})")
            for key, fig in result.items():
                ratio = fig.get("flow_wall_over_critical")
                print(
                    f"  {key:14} flow {fig['flow_wall_s']:6.2f}s  nodes {fig['nodes_wall_s']:6.2f}s"
                    + (
                        f"  flow/crit {ratio:5.2f}  nodes/crit {fig['nodes_wall_over_critical']:5.2f}"
                        f"  overhead/crit-node {fig['overhead_ms_per_critical_node']:6.0f}ms"
                        if ratio
                        else ""
                    )
                    + f"  cpu/node {fig['cpu_ms_per_node']:6.1f}ms  server/node {fig['server_cpu_ms_per_node']:6.1f}ms"
                    f"  start-spread {fig['model_call_start_spread_s']:5.2f}s"
                    f"  flow start/finish {fig['flow_start_s']:4.2f}/{fig['flow_finish_s']:4.2f}s  failed {fig['failed_total']}"
                )
                for message, count in fig["failure_kinds"].items():
                    print(f"      {count} x {message}")
        if args.profile:
            report["profile"] = {}
            for variant in ("baseline", "speedups"):
                prof = _run_child("--profile-child", variant, args, env)
                report["profile"][variant] = prof
                print(
                    f"\n== profile {variant}: {prof['nodes']} nodes in sequence, latency 0: "
                    f"wall {prof['sequential_wall_ms_per_node']:.0f} ms/node, flow-thread CPU "
                    f"{prof['flow_thread_cpu_ms_per_node']:.1f} ms/node, background threads "
                    f"{prof['background_threads_cpu_ms_per_node']:.1f} ms/node"
                )
                print(
                    "  wall time per node by component (sequential; shares scaled to unprofiled wall):"
                )
                for name, ms in prof["breakdown_ms_per_node"].items():
                    print(f"  {ms:7.1f} ms  {name}")
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    report["loadavg_end"] = os.getloadavg()[0]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
