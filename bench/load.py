"""Many runs at once through deployments, SQLite vs PostgreSQL, 1 vs 2 workers; a wide plan on threads vs Dask.

For each database a real `prefect server start` (SQLite file, or a throwaway PostgreSQL from
`foreman.pg`), `prefect deploy` of run-workflow, then for 1 and 2 `prefect worker` processes:
N runs of a four-step script workflow triggered at once through the REST API. Each step appends
`run step pid` to a log, so a step that ran twice shows twice. Counted: runs/minute, p50/p95
trigger -> done, runs not COMPLETED, HTTP 503 answers (retried, as Prefect's own client does),
results lost (a COMPLETED run whose summary or step log lacks a step) and duplicate step
executions. Then a wide plan (40 script nodes, width 16, each sleeping `--latency` s) runs
in this process on the SQLite server with the thread pool and with a local Dask cluster:
wall time / critical path. The last line is JSON.

    .venv/bin/python bench/load.py [--runs 4] [--latency 1.0] [--quick]

Not measured here: agent steps (a model in the worker processes), faults (kill -9, restarts).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
STEP = """\
import os, sys, time
time.sleep(float(sys.argv[3]))
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "steps.log"), "a") as log:
    log.write(f"{sys.argv[1]} {sys.argv[2]} {os.getpid()}\\n")
print('{"ok": true}')
"""


class CountingClient(httpx.Client):
    """Retries 429/502/503 with backoff, as Prefect's client does, and counts them."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.status_503 = 0
        self._lock = threading.Lock()

    def send(self, request: httpx.Request, **kwargs) -> httpx.Response:  # type: ignore[override]
        for attempt in range(8):
            response = super().send(request, **kwargs)
            if response.status_code not in {429, 502, 503}:
                return response
            with self._lock:
                self.status_503 += response.status_code == 503
            time.sleep(0.25 * 2 ** attempt)
        return response


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, tmp: Path, database_url: str | None) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.api = f"http://127.0.0.1:{free_port()}/api"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FOREMAN_"))}
        self.env.update({"PREFECT_HOME": str(tmp / "prefect"), "PREFECT_API_URL": self.api,
                         "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "1",
                         "FOREMAN_HOME": str(tmp / "foreman")})
        if database_url:
            self.env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
        self.server: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.http = CountingClient(base_url=self.api, timeout=60)

    def _start(self, *args: str, log: str) -> subprocess.Popen:
        return subprocess.Popen([str(BIN / "prefect"), *args], cwd=ROOT, env=self.env, start_new_session=True,
                                stdout=(self.tmp / log).open("w"), stderr=subprocess.STDOUT)

    def cli(self, *args: str) -> None:
        done = subprocess.run([str(BIN / "prefect"), *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=600, check=False)
        if done.returncode:
            raise RuntimeError(f"prefect {' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-2000:]}")

    def up(self) -> float:
        t0 = time.time()
        self.server = self._start("server", "start", "--host", "127.0.0.1", "--port",
                                  self.api.rsplit(":", 1)[1].split("/")[0], log="server.log")
        while True:
            try:
                if self.http.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.server.poll() is not None:
                raise RuntimeError((self.tmp / "server.log").read_text()[-3000:])
            time.sleep(1)
        self.cli("work-pool", "create", "foreman", "--type", "process")
        self.cli("--no-prompt", "deploy", "--name", "run-workflow")
        return time.time() - t0

    def set_workers(self, n: int) -> None:
        while len(self.workers) < n:
            i = len(self.workers)
            self.workers.append(self._start("worker", "start", "--pool", "foreman", "--name", f"w{i}",
                                            log=f"worker-{i}.log"))

    def down(self) -> None:
        for process in [*self.workers, self.server]:
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def counted_workflow(folder: Path, latency: float) -> Path:
    folder.mkdir(parents=True)
    (folder / "step.py").write_text(STEP)
    step = '{{id: {0}, script: {{path: step.py, args: ["${{tag}}", {0}, "{2}"]}}{1}}}'
    lines = [step.format("a", "", latency), step.format("b", ", depends_on: [a]", latency),
             step.format("c", ", depends_on: [a]", latency), step.format("d", ", depends_on: [b, c]", latency)]
    path = folder / "workflow.yaml"
    path.write_text("name: counted\nparams:\n  tag: {type: str, default: x}\nsteps:\n"
                    + "\n".join("  - " + line for line in lines) + "\n")
    return path


def _time(text: str | None) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else float("nan")


def batch(stack: Stack, label: str, runs: int, latency: float) -> dict:
    """Trigger `runs` runs at once; wait for all; count what matters."""
    folder = stack.tmp / f"batch-{label}"
    workflow = counted_workflow(folder, latency)
    deployment = {d["name"]: d for d in stack.http.post("/deployments/filter", json={}).json()}["run-workflow"]["id"]
    before_503 = stack.http.status_503
    ids: list[str | None] = [None] * runs
    triggered = [0.0] * runs

    def trigger(i: int) -> None:
        triggered[i] = time.time()
        ids[i] = stack.http.post(f"/deployments/{deployment}/create_flow_run", json={
            "parameters": {"path": str(workflow), "params": {"tag": f"r{i}"}}}).json()["id"]

    t0 = time.time()
    threads = [threading.Thread(target=trigger, args=(i,)) for i in range(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.time() + 60 * 30
    while time.time() < deadline:
        flows = [stack.http.get(f"/flow_runs/{i}").json() for i in ids]
        if all(f["state"]["type"] in FINAL for f in flows):
            break
        time.sleep(1)
    wall = time.time() - t0
    completed = [f for f in flows if f["state"]["type"] == "COMPLETED"]
    latencies = sorted(_time(f["end_time"]) - triggered[ids.index(f["id"])] for f in completed)
    log = folder / "steps.log"
    seen = Counter((tag, step) for tag, step, _ in (line.split() for line in log.read_text().splitlines())) \
        if log.exists() else Counter()
    lost = 0
    for f in completed:
        tag = f"r{ids.index(f['id'])}"
        art = stack.http.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [f["id"]]},
                                                                       "key": {"any_": ["summary"]}}}).json()
        rows = {r["sub-task"]: r["status"] for r in json.loads(art[0]["data"])} if art else {}
        lost += sum(1 for s in "abcd" if rows.get(s) != "COMPLETED" or not seen[(tag, s)])
    return {
        "runs": runs, "completed": len(completed), "errors": runs - len(completed),
        "errors_503": stack.http.status_503 - before_503,
        "runs_per_min": round(len(completed) * 60 / wall, 2), "wall_s": round(wall, 1),
        "p50_s": round(statistics.median(latencies), 1) if latencies else None,
        "p95_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 1) if latencies else None,
        "results_lost": lost, "duplicate_steps": sum(n - 1 for n in seen.values() if n > 1),
    }


def wide_plan(stack: Stack, latency: float, nodes: int = 40, width: int = 16) -> dict:
    """The same 40-node plan (layers of up to `width`) on threads and on a local Dask cluster."""
    os.environ.update({k: v for k, v in stack.env.items() if k.startswith(("PREFECT_", "FOREMAN_"))})
    folder = stack.tmp / "wide"
    folder.mkdir()
    (folder / "sleep.py").write_text("import sys, time\ntime.sleep(float(sys.argv[1]))\nprint('{\"ok\": true}')\n")
    layers, i = [], 0
    while i < nodes:
        size = 1 if not layers else min(width, nodes - i)
        layers.append([f"n{j}" for j in range(i, i + size)])
        i += size
    lines = []
    for depth, layer in enumerate(layers):
        for k, node in enumerate(layer):
            deps = f", depends_on: [{layers[depth - 1][k % len(layers[depth - 1])]}]" if depth else ""
            lines.append(f'  - {{id: {node}, script: {{path: sleep.py, args: ["{latency}"]}}{deps}}}')
    path = folder / "workflow.yaml"
    path.write_text("name: wide\nsteps:\n" + "\n".join(lines) + "\n")
    critical = len(layers) * latency
    from prefect.settings import PREFECT_API_URL, temporary_settings

    figures = {}
    with temporary_settings(updates={PREFECT_API_URL: stack.api}):
        for kind in ("threads", "dask"):
            figures[kind] = _wide_once(kind, path, width, critical)
    return figures


def _wide_once(kind: str, path: Path, width: int, critical: float) -> dict:
    """One run of the wide plan with the engine itself (run-workflow caps files at 25 steps)."""
    from prefect import flow

    from foreman.agents.registry import registry
    from foreman.engine.cf_runner import ControlFlowRunner, build_scope
    from foreman.engine.executor import Engine
    from foreman.engine.policy import RunPolicy
    from foreman.engine.records import Budgets, RunStatus
    from foreman.engine.store import run_store
    from foreman.engine.task_runners import task_runner
    from foreman.engine.workflow import load_workflow
    from foreman.settings import get_settings, reset_settings
    from foreman.tools.catalog import ToolEnv

    os.environ.update({"FOREMAN_TASK_RUNNER": kind, "FOREMAN_DASK_WORKERS": "2",
                       "FOREMAN_TASK_THREADS": str(width // 2 if kind == "dask" else width)})
    reset_settings()
    settings = get_settings()
    policy = RunPolicy.build(check_workspace=False)
    scope = build_scope(registry, policy, max_nodes=200, max_depth=200)
    workflow = load_workflow(path, scope)
    runner = ControlFlowRunner(ToolEnv.from_settings(settings), registry, settings, policy=policy,
                               script_base=workflow.folder)
    engine = Engine(runner, scope, run_store(), Budgets(max_llm_calls=1000, max_concurrency=width))

    @flow(name=f"wide-{kind}", task_runner=task_runner())
    def wide():
        t0 = time.perf_counter()
        report = engine.run(workflow.plan, f"wide-{kind}-{time.time_ns()}")
        return report, time.perf_counter() - t0

    # The flow runs in a thread of its own: in the main thread, the engine's 20 ms waits use
    # Prefect's SIGALRM timeouts, and with Dask's event loop in the process a stray alarm
    # crashed the run (CancelledError from `wait`; see the report on issue #16).
    box: dict = {}

    def go() -> None:
        try:
            box["value"] = wide()
        except BaseException as exc:  # noqa: BLE001  (re-raised below, in the main thread)
            box["error"] = exc

    t0 = time.perf_counter()
    thread = threading.Thread(target=go, name=f"wide-{kind}")
    thread.start()
    thread.join()
    wall = time.perf_counter() - t0
    if "error" in box:
        raise box["error"]
    report, engine_wall = box["value"]
    assert report.status == RunStatus.COMPLETED, report.stopped_by
    return {"wall_s": round(wall, 2), "engine_wall_s": round(engine_wall, 2), "critical_path_s": critical,
            "critical_path_ratio": round(engine_wall / critical, 2), "flow_critical_path_ratio": round(wall / critical, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="one worker only, no Dask plan")
    args = parser.parse_args()
    from foreman.pg import TempPostgres

    tmp = Path(tempfile.mkdtemp(prefix="foreman-bench-load-"))
    rows: dict[str, dict] = {}
    wide: dict = {}
    for database in ("sqlite", "postgres"):
        postgres = TempPostgres() if database == "postgres" else None
        stack = None
        try:
            url = postgres.start().create_database("prefect") if postgres else None
            stack = Stack(tmp / database, url)
            startup = stack.up()
            for workers in ((1,) if args.quick else (1, 2)):
                stack.set_workers(workers)
                row = batch(stack, f"{workers}w", args.runs, latency=0.2)
                row["server_start_s"] = round(startup, 1)
                rows[f"{database}_{workers}w"] = row
                print(f"{database:8} workers={workers} " + "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            if database == "sqlite" and not args.quick:
                wide = wide_plan(stack, args.latency)
                for kind, row in wide.items():
                    print(f"wide40_w16 {kind:7} " + "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        finally:
            if stack:
                stack.down()
            if postgres:
                postgres.remove()

    def best(db: str) -> float:
        return max(r["runs_per_min"] for k, r in rows.items() if k.startswith(db))

    print(json.dumps({
        "results_lost": sum(r["results_lost"] for r in rows.values()),
        "duplicate_steps": sum(r["duplicate_steps"] for r in rows.values()),
        "errors": sum(r["errors"] for r in rows.values()),
        "errors_503": sum(r["errors_503"] for r in rows.values()),
        "runs_per_min_sqlite": best("sqlite"), "runs_per_min_postgres": best("postgres"),
        "dask_critical_path_ratio": wide.get("dask", {}).get("critical_path_ratio"),
        "threads_critical_path_ratio": wide.get("threads", {}).get("critical_path_ratio"),
        "configs": rows,
    }))


if __name__ == "__main__":
    main()
