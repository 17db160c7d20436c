"""Many runs at once through deployments, SQLite vs PostgreSQL, 1 vs 2 workers; a wide plan on threads vs Dask; faults.

For each database a real `prefect server start` (SQLite file, or a throwaway PostgreSQL from
`foreman.pg`), `prefect deploy` of run-workflow, then for 1 and 2 `prefect worker` processes:
N runs of a five-step workflow triggered at once through the REST API: four script steps and
one agent step, whose model is a local OpenAI-compatible server (`FakeProvider`: scripted
answers, `--model-latency` s each) that first has the agent call `notify_user` (a side effect)
and then complete. Each script step appends `run step pid` to a log, so a step that ran twice
shows twice; the provider counts each agent step's completions and the audit log each
notification. Counted: runs/minute, p50/p95 trigger -> done, runs not COMPLETED, HTTP 503
answers (retried, as Prefect's own client does), results lost (a COMPLETED run whose summary
or logs lack a step) and duplicate executions (a script step, an agent step's completion or
its notification twice). Then a wide plan (40 script nodes, width 16, each sleeping
`--latency` s) runs in this process on the SQLite server with the thread pool and with a
local Dask cluster: wall time / critical path. The last line is JSON.

`--faults` instead runs three faults on PostgreSQL with two workers, each under load:
kill -9 one worker (and its flow processes) mid-run, then resume its runs as a person would
(`foreman workflow run FILE --resume KEY`); restart the Prefect server mid-run; and a model
server that drops every `--drop-every`-th connection mid-response. Each prints what happened.

    .venv/bin/python bench/load.py [--runs 4] [--latency 1.0] [--quick]
    .venv/bin/python bench/load.py --faults [--runs 4]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
SCRIPT_STEPS = "abcd"
STEP = """\
import os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
def note(name):
    with open(os.path.join(here, name), "a") as log:
        log.write(f"{sys.argv[1]} {sys.argv[2]} {os.getpid()} {time.time()}\\n")
note("started.log")
time.sleep(float(sys.argv[3]))
note("steps.log")
print('{"ok": true}')
"""
MARK = re.compile(r"\[\[run (\S+?) step (\S+?)\]\]")  # in an agent step's instructions: whose turn it is


# --- a hosted model: an OpenAI-compatible server on loopback -------------------------


def completion(message: dict[str, Any]) -> bytes:
    return json.dumps({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": "fake",
        "choices": [{"index": 0, "message": message,
                     "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }).encode()


def agent_reply(body: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """What a model that does its job says: the reply, and the (run, step) it completes, if any.

    No tools offered: "pong". A step whose instructions carry `[[run R step S]]` first calls
    `notify_user` (once: not after the history shows the call), then completes; any other
    step completes at once. Stateless, so a retried call gets the same answer."""
    from foreman.cf_adapter.names import is_success_tool

    offered = {t["function"]["name"]: t["function"] for t in body.get("tools") or []}
    tools = list(offered)
    success = next((t for t in tools if is_success_tool(t)), None)
    if success is None:
        return {"role": "assistant", "content": "pong"}, None
    messages = body.get("messages") or []
    mark = MARK.search(json.dumps(messages))
    run, step = mark.groups() if mark else ("-", "-")
    called = {c["function"]["name"] for m in messages for c in m.get("tool_calls") or []}
    if mark and "notify_user" in tools and "notify_user" not in called:
        name, args, done = "notify_user", {"message": f"run {run} step {step}: all good"}, None
    else:
        fields = (offered[success].get("parameters") or {}).get("properties") or {"result": {}}
        name, args, done = success, {field: f"done {run} {step}" for field in fields}, (run, step)
    call = {"id": f"call_{time.time_ns()}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)}}
    return {"role": "assistant", "content": None, "tool_calls": [call]}, done


class FakeProvider(ThreadingHTTPServer):
    """`openai-compatible/fake` at `url`: answers whole chat-completion calls, faults on request.

    Each POST takes the next scripted fault, if any: `(status, headers)` answers that status;
    "slow" answers after `slow_s` (past a client's timeout); "drop" sends the headers and half
    the body, then closes the connection, as a model server that dies mid-response. With
    `drop_every=k` every k-th call is dropped too. Counted: arrival times, drops, and per
    (run, step) the completions sent whole."""

    daemon_threads = True

    def __init__(self, faults: list[tuple[int, dict[str, str]] | str] | None = None, *, latency_s: float = 0.0,
                 drop_every: int = 0, slow_s: float = 3.0) -> None:
        self.faults = list(faults or [])
        self.latency_s, self.drop_every, self.slow_s = latency_s, drop_every, slow_s
        self.arrivals: list[float] = []
        self.dropped = 0
        self.completions: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), ProviderHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def start(self) -> FakeProvider:
        threading.Thread(target=self.serve_forever, name="fake-provider", daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def next_fault(self) -> tuple[int, dict[str, str]] | str | None:
        with self.lock:
            self.arrivals.append(time.monotonic())
            if self.faults:
                return self.faults.pop(0)
            if self.drop_every and len(self.arrivals) % self.drop_every == 0:
                return "drop"
        return None


class ProviderHandler(BaseHTTPRequestHandler):
    server: FakeProvider

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, *, cut: bool = False) -> bool:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(body[: len(body) // 2] if cut else body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return False
        if cut:  # the server "dies": the client sees the connection close half-way through the body
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        return not cut

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        fault = self.server.next_fault()
        if isinstance(fault, tuple):
            self._send(fault[0], json.dumps({"error": {"message": "busy"}}).encode(), fault[1])
            return
        if body.get("stream"):
            self._send(400, json.dumps({"error": {"message": "this fake answers whole calls only"}}).encode())
            return
        time.sleep(self.server.slow_s if fault == "slow" else self.server.latency_s)
        message, done = agent_reply(body)
        sent = self._send(200, completion(message), cut=fault == "drop")
        with self.server.lock:
            if fault == "drop":
                self.server.dropped += 1
            elif sent and done:
                self.server.completions[done] += 1


# --- the stack: a Prefect server, a work pool, workers -------------------------------


class CountingClient(httpx.Client):
    """Retries 429/502/503 and connection errors with backoff, as Prefect's client does, and counts them."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.status_503 = 0
        self._lock = threading.Lock()

    def send(self, request: httpx.Request, **kwargs) -> httpx.Response:  # type: ignore[override]
        for attempt in range(10):
            try:
                response = super().send(request, **kwargs)
            except httpx.TransportError:
                if attempt == 9:
                    raise
                time.sleep(min(0.25 * 2 ** attempt, 10))
                continue
            if response.status_code not in {429, 502, 503}:
                return response
            with self._lock:
                self.status_503 += response.status_code == 503
            time.sleep(min(0.25 * 2 ** attempt, 10))
        return response


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, tmp: Path, database_url: str | None, model_url: str | None = None) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.api = f"http://127.0.0.1:{free_port()}/api"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FOREMAN_"))}
        self.env.update({"PREFECT_HOME": str(tmp / "prefect"), "PREFECT_API_URL": self.api,
                         "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "1",
                         "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30", "FOREMAN_HOME": str(tmp / "foreman")})
        if database_url:
            self.env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
        if model_url:
            self.env.update({"FOREMAN_MODEL": "openai-compatible/fake", "FOREMAN_BASE_URL": model_url,
                             "FOREMAN_API_KEY": "not-needed"})
        self.server: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.http = CountingClient(base_url=self.api, timeout=60)
        self._logs = Counter[str]()

    def _start(self, *args: str, log: str) -> subprocess.Popen:
        self._logs[log] += 1
        name = log if self._logs[log] == 1 else f"{log}.{self._logs[log]}"
        return subprocess.Popen([str(BIN / "prefect"), *args], cwd=ROOT, env=self.env, start_new_session=True,
                                stdout=(self.tmp / name).open("w"), stderr=subprocess.STDOUT)

    def cli(self, *args: str) -> None:
        done = subprocess.run([str(BIN / "prefect"), *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=600, check=False)
        if done.returncode:
            raise RuntimeError(f"prefect {' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-2000:]}")

    def serve(self) -> float:
        """Start the server (again, on the same port and database); seconds until it answers."""
        t0 = time.time()
        self.server = self._start("server", "start", "--host", "127.0.0.1", "--port",
                                  self.api.rsplit(":", 1)[1].split("/")[0], log="server.log")
        while True:
            try:
                if httpx.get(self.api + "/health", timeout=5).status_code == 200:
                    return time.time() - t0
            except httpx.TransportError:
                pass
            if self.server.poll() is not None:
                raise RuntimeError((self.tmp / "server.log").read_text()[-3000:])
            time.sleep(1)

    def up(self) -> float:
        t0 = time.time()
        self.serve()
        self.cli("work-pool", "create", "foreman", "--type", "process")
        self.cli("--no-prompt", "deploy", "--name", "run-workflow")
        return time.time() - t0

    def stop_server(self) -> None:
        if self.server is not None:
            _stop(self.server)

    def set_workers(self, n: int, limit: int | None = None) -> None:
        """`n` workers on the pool; `limit` caps each one's flow runs at once (else the first to poll
        takes every waiting run)."""
        while len(self.workers) < n:
            i = len(self.workers)
            cap = ("--limit", str(limit)) if limit else ()
            self.workers.append(self._start("worker", "start", "--pool", "foreman", "--name", f"w{i}", *cap,
                                            log=f"worker-{i}.log"))

    def down(self) -> None:
        for process in [*self.workers, self.server]:
            if process is not None:
                _stop(process)

    def foreman(self, *args: str, log: str) -> subprocess.Popen:
        """A `foreman` command in its own process, as a person runs it, against this stack."""
        return subprocess.Popen([str(BIN / "foreman"), *args], cwd=self.tmp, env=self.env, start_new_session=True,
                                stdout=(self.tmp / log).open("w"), stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# --- one batch of runs ---------------------------------------------------------------


def counted_workflow(folder: Path, latency: float, agent: bool = True) -> Path:
    """a -> (b, c) -> d as scripts that log each execution; with `agent`, e (after a) is an agent step
    that notifies the user, then completes. `retries: 0` on e: a model fault that fails the step shows."""
    folder.mkdir(parents=True)
    (folder / "step.py").write_text(STEP)
    step = '{{id: {0}, script: {{path: step.py, args: ["${{tag}}", {0}, "{2}"]}}{1}}}'
    lines = [step.format("a", "", latency), step.format("b", ", depends_on: [a]", latency),
             step.format("c", ", depends_on: [a]", latency), step.format("d", ", depends_on: [b, c]", latency)]
    if agent:
        lines.append('{id: e, agent: generalist, depends_on: [a], retries: 0, '
                     'instructions: "Tell the user that run ${tag} is done. [[run ${tag} step e]]"}')
    path = folder / "workflow.yaml"
    path.write_text("name: counted\nparams:\n  tag: {type: str, default: x}\nsteps:\n"
                    + "\n".join("  - " + line for line in lines) + "\n")
    return path


def _time(text: str | None) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else float("nan")


def _log(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def deployment_id(stack: Stack) -> str:
    return {d["name"]: d for d in stack.http.post("/deployments/filter", json={}).json()}["run-workflow"]["id"]


def trigger(stack: Stack, workflow: Path, runs: int) -> tuple[list[str], list[float]]:
    """`runs` runs of `workflow` (tags r0..), all at once through the deployment: ids, trigger times."""
    deployment = deployment_id(stack)
    ids: list[str] = [""] * runs
    triggered = [0.0] * runs

    def one(i: int) -> None:
        triggered[i] = time.time()
        ids[i] = stack.http.post(f"/deployments/{deployment}/create_flow_run", json={
            "parameters": {"path": str(workflow), "params": {"tag": f"r{i}"}, "ground": False}}).json()["id"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ids, triggered


def flow_runs(stack: Stack, ids: list[str]) -> list[dict]:
    return [stack.http.get(f"/flow_runs/{i}").json() for i in ids]


def wait_final(stack: Stack, ids: list[str], timeout_s: float = 60 * 30) -> list[dict]:
    deadline = time.time() + timeout_s
    while True:
        flows = flow_runs(stack, ids)
        if all(f["state"]["type"] in FINAL for f in flows) or time.time() > deadline:
            return flows
        time.sleep(1)


def notifications(stack: Stack, flow_run_id: str) -> int:
    """notify_user calls that ran in this flow run (the audit log every worker writes to)."""
    from foreman.tools.audit import AuditLog

    path = stack.tmp / "foreman" / "audit.sqlite3"
    if not path.exists():
        return 0
    return sum(1 for r in AuditLog(path).for_run(flow_run_id) if r.tool == "notify_user" and r.outcome == "ok")


def summary_rows(stack: Stack, flow_run_id: str) -> dict[str, str]:
    art = stack.http.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]},
                                                                   "key": {"any_": ["summary"]}}}).json()
    return {r["sub-task"]: r["status"] for r in json.loads(art[0]["data"])} if art else {}


def tally(stack: Stack, folder: Path, tags: dict[str, list[str]], completions: Counter | None) -> dict:
    """Lost results and duplicate executions over every run of each tag (a run and its resumes).

    `tags`: run tag -> its flow run ids, the one that finished last first. `completions`: the
    provider's agent-step completions during these runs (None: no agent steps)."""
    seen = Counter((row[0], row[1]) for row in _log(folder / "steps.log"))
    lost, duplicates = 0, 0
    for tag, ids in tags.items():
        rows = summary_rows(stack, ids[0])
        steps = SCRIPT_STEPS + ("e" if completions is not None else "")
        lost += sum(1 for s in steps if rows.get(s) != "COMPLETED")
        lost += sum(1 for s in SCRIPT_STEPS if not seen[(tag, s)])
        duplicates += sum(max(0, seen[(tag, s)] - 1) for s in SCRIPT_STEPS)
        if completions is not None:
            told = sum(notifications(stack, i) for i in ids)
            done = completions[(tag, "e")]
            lost += (not told) + (not done)
            duplicates += max(0, told - 1) + max(0, done - 1)
    return {"results_lost": lost, "duplicate_steps": duplicates}


def batch(stack: Stack, label: str, runs: int, latency: float, provider: FakeProvider | None = None) -> dict:
    """Trigger `runs` runs at once; wait for all; count what matters."""
    folder = stack.tmp / f"batch-{label}"
    workflow = counted_workflow(folder, latency, agent=provider is not None)
    before_503 = stack.http.status_503
    before = Counter(provider.completions) if provider else Counter()
    t0 = time.time()
    ids, triggered = trigger(stack, workflow, runs)
    flows = wait_final(stack, ids)
    wall = time.time() - t0
    completed = [f for f in flows if f["state"]["type"] == "COMPLETED"]
    latencies = sorted(_time(f["end_time"]) - triggered[ids.index(f["id"])] for f in completed)
    counts = tally(stack, folder, {f"r{ids.index(f['id'])}": [f["id"]] for f in completed},
                   provider.completions - before if provider else None)
    return {
        "runs": runs, "completed": len(completed), "errors": runs - len(completed),
        "errors_503": stack.http.status_503 - before_503,
        "runs_per_min": round(len(completed) * 60 / wall, 2), "wall_s": round(wall, 1),
        "p50_s": round(statistics.median(latencies), 1) if latencies else None,
        "p95_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 1) if latencies else None,
        **counts,
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


# --- faults --------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (whatever session or group it put itself in)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def flow_pid(run: dict) -> int | None:
    """The pid of a flow run's process, from the `host:pid` its process worker records."""
    pid = str(run.get("infrastructure_pid") or "").rsplit(":", 1)[-1]
    return int(pid) if pid.isdigit() else None


def resumed_runs(stack: Stack, since: float) -> dict[str, str]:
    """run key resumed -> the flow run that resumed it, for runs started after `since`."""
    after = datetime.fromtimestamp(since).astimezone().isoformat()
    found = stack.http.post("/flow_runs/filter", json={"flow_runs": {"start_time": {"after_": after}}}).json()
    return {f["parameters"]["resume"]: f["id"] for f in found if (f.get("parameters") or {}).get("resume")}


def resume_all(stack: Stack, workflow: Path, keys: dict[str, str], label: str) -> dict[str, int]:
    """`foreman workflow run FILE --resume KEY` for each run key (-> its tag), at once, as a person would."""
    since = time.time() - 1
    processes = {key: stack.foreman("workflow", "run", str(workflow), "--param", f"tag={tag}", "--resume", key,
                                    "--no-ground", log=f"{label}-resume-{tag}.log")
                 for key, tag in keys.items()}
    codes = {key: process.wait(timeout=1800) for key, process in processes.items()}
    return {"exit_codes": codes, "flow_runs": resumed_runs(stack, since)}


def _each_finished_a_step(folder: Path, tags: set[str]) -> bool:
    return bool(tags) and {r[0] for r in _log(folder / "steps.log")} >= tags


def _strike_now(stack: Stack, folder: Path, victims: dict[str, str]) -> bool:
    """Each victim run (flow run id -> tag) finished a step, one is mid-step, and every step that
    ended is saved in the run store: a step that ended but is not saved yet would run again on
    resume (at-least-once: the result is saved when the step ends), which is not what is measured."""
    from foreman.engine.store import RunStore

    path = stack.tmp / "foreman" / "runs.sqlite3"
    if not victims or not path.exists():
        return False
    ended = {(r[0], r[1]) for r in _log(folder / "steps.log")}
    store = RunStore(path)
    for run_id, tag in victims.items():
        mine = {step for t, step in ended if t == tag}
        if not mine or not mine <= {node for node, _ in store.finished_results(run_id)}:
            return False
    return any(r[0] in victims.values() and (r[0], r[1]) not in ended for r in _log(folder / "started.log"))


def fault_kill_worker(stack: Stack, runs: int, latency: float) -> dict:
    """kill -9 the busiest worker and every process under it while runs are in flight; resume its runs.

    Script steps only: an agent step cut off mid-way runs again whole on resume, tool calls
    included (Foreman saves a step's result when it ends, not each tool call)."""
    assert len(stack.workers) >= 2, "needs two workers"
    folder = stack.tmp / "fault-kill"
    workflow = counted_workflow(folder, latency, agent=False)
    ids, _ = trigger(stack, workflow, runs)
    deadline = time.time() + 900
    while True:
        flows = flow_runs(stack, ids)
        runs_of = {w: [f for f in flows if flow_pid(f) in set(descendants(w.pid))]
                   for w in stack.workers if w.poll() is None}
        worker, mine = max(runs_of.items(), key=lambda item: len(item[1]))
        if (all(f["state"]["type"] == "RUNNING" for f in flows)
                and _strike_now(stack, folder, {f["id"]: f"r{ids.index(f['id'])}" for f in mine})):
            break
        if time.time() > deadline:
            raise RuntimeError(f"the runs never got under way: {[f['state']['type'] for f in flows]}")
        time.sleep(0.1)
    for pid in [worker.pid, *descendants(worker.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    worker.wait()
    killed_at = time.time()
    done_before = Counter((r[0], r[1]) for r in _log(folder / "steps.log"))
    victims = {f["id"]: f"r{ids.index(f['id'])}" for f in mine}
    others = wait_final(stack, [i for i in ids if i not in victims])
    left_running = sum(f["state"]["type"] == "RUNNING" for f in flow_runs(stack, list(victims)))
    resumed = resume_all(stack, workflow, victims, "kill")
    states = Counter(f["state"]["type"] for f in flow_runs(stack, list(victims)))
    tags = {tag: [resumed["flow_runs"].get(key, key), key] for key, tag in victims.items()}
    tags.update({f"r{ids.index(f['id'])}": [f["id"]] for f in others})
    return {
        "runs": runs, "killed_runs": len(victims), "killed_left_running": left_running,
        "killed_marked_crashed": states.get("CRASHED", 0),
        "reused_steps": sum(n for (tag, _), n in done_before.items() if tag in victims.values()),
        "resumed_ok": sum(code == 0 for code in resumed["exit_codes"].values()),
        "other_worker_completed": sum(f["state"]["type"] == "COMPLETED" for f in others),
        "other_worker_runs": len(others), "resume_s": round(time.time() - killed_at, 1),
        **tally(stack, folder, tags, None),
    }


def fault_restart_server(stack: Stack, provider: FakeProvider | None, runs: int, latency: float,
                         down_s: float = 5.0) -> dict:
    """Stop the Prefect server while runs are in flight, start it again; resume any run that did not
    complete (none should need it: Prefect's client retries while the server is away)."""
    folder = stack.tmp / "fault-restart"
    workflow = counted_workflow(folder, latency, agent=provider is not None)
    before = Counter(provider.completions) if provider else Counter()
    ids, _ = trigger(stack, workflow, runs)
    deadline = time.time() + 900
    while not (all(f["state"]["type"] == "RUNNING" for f in flow_runs(stack, ids))
               and _each_finished_a_step(folder, {f"r{i}" for i in range(runs)})):
        if time.time() > deadline:
            raise RuntimeError("the runs never got under way")
        time.sleep(0.2)
    t0 = time.time()
    stack.stop_server()
    time.sleep(down_s)
    stack.serve()
    outage = time.time() - t0
    flows = wait_final(stack, ids, timeout_s=900)
    states = Counter(f["state"]["type"] for f in flows)
    retry = {f["id"]: f"r{ids.index(f['id'])}" for f in flows if f["state"]["type"] != "COMPLETED"}
    resumed = resume_all(stack, workflow, retry, "restart") if retry else {"exit_codes": {}, "flow_runs": {}}
    tags = {f"r{i}": [resumed["flow_runs"].get(key, key), key] if key in retry else [key]
            for i, key in enumerate(ids)}
    return {
        "runs": runs, "server_down_s": round(outage, 1), "states_after_restart": dict(states),
        "retried": len(retry), "retried_ok": sum(code == 0 for code in resumed["exit_codes"].values()),
        **tally(stack, folder, tags, provider.completions - before if provider else None),
    }


def fault_model_drops(stack: Stack, provider: FakeProvider, runs: int, latency: float, every: int) -> dict:
    """A batch whose model server drops every `every`-th call mid-response."""
    before = provider.dropped
    provider.drop_every = every
    try:
        row = batch(stack, "drops", runs, latency, provider)
    finally:
        provider.drop_every = 0
    return {"calls_dropped": provider.dropped - before, **row}


def faults_main(args: argparse.Namespace, tmp: Path) -> None:
    """The three faults on PostgreSQL with two workers; one line each, then the JSON line."""
    from foreman.pg import TempPostgres

    postgres = TempPostgres()
    provider = FakeProvider(latency_s=args.model_latency).start()
    stack = None
    found: dict[str, dict] = {}
    try:
        stack = Stack(tmp / "faults", postgres.start().create_database("prefect"), provider.url)
        stack.up()
        stack.set_workers(2, limit=max(1, args.runs // 2))  # both get runs, so one can be killed under load
        steps = [("model_dies_mid_call", lambda: fault_model_drops(stack, provider, args.runs, 0.5, args.drop_every)),
                 ("server_restart", lambda: fault_restart_server(stack, provider, args.runs, 2.0)),
                 ("worker_killed", lambda: fault_kill_worker(stack, args.runs, 3.0))]
        for name, run in steps:
            found[name] = run()
            print(f"{name:20} " + "  ".join(f"{k}={v}" for k, v in found[name].items()), flush=True)
    finally:
        if stack:
            stack.down()
        postgres.remove()
        provider.stop()
    print(json.dumps({
        "results_lost": sum(r["results_lost"] for r in found.values()),
        "duplicate_steps": sum(r["duplicate_steps"] for r in found.values()),
        "model_calls_dropped": found.get("model_dies_mid_call", {}).get("calls_dropped"),
        "killed_marked_crashed": found.get("worker_killed", {}).get("killed_marked_crashed"),
        "faults": found,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--model-latency", type=float, default=0.5, help="seconds per fake model call")
    parser.add_argument("--quick", action="store_true", help="one worker only, no Dask plan")
    parser.add_argument("--faults", action="store_true", help="the fault runs instead of the load runs")
    parser.add_argument("--drop-every", type=int, default=3, help="with --faults: drop every k-th model call")
    args = parser.parse_args()
    from foreman.pg import TempPostgres

    tmp = Path(tempfile.mkdtemp(prefix="foreman-bench-load-"))
    if args.faults:
        faults_main(args, tmp)
        return
    rows: dict[str, dict] = {}
    wide: dict = {}
    provider = FakeProvider(latency_s=args.model_latency).start()
    try:
        for database in ("sqlite", "postgres"):
            postgres = TempPostgres() if database == "postgres" else None
            stack = None
            try:
                url = postgres.start().create_database("prefect") if postgres else None
                stack = Stack(tmp / database, url, provider.url)
                startup = stack.up()
                for workers in ((1,) if args.quick else (1, 2)):
                    stack.set_workers(workers)
                    row = batch(stack, f"{workers}w", args.runs, latency=0.2, provider=provider)
                    row["server_start_s"] = round(startup, 1)
                    rows[f"{database}_{workers}w"] = row
                    print(f"{database:8} workers={workers} " + "  ".join(f"{k}={v}" for k, v in row.items()),
                          flush=True)
                if database == "sqlite" and not args.quick:
                    wide = wide_plan(stack, args.latency)
                    for kind, row in wide.items():
                        print(f"wide40_w16 {kind:7} " + "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            finally:
                if stack:
                    stack.down()
                if postgres:
                    postgres.remove()
    finally:
        provider.stop()

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
