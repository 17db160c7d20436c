"""The always-on setup, as the README gives it: a Prefect server, `prefect deploy --all`, a worker.

One real `prefect server start` on a loopback port, the repo's prefect.yaml deployed with
the Prefect CLI, a real `prefect worker start` running a deployed workflow in its own
process, and a person approving the paused run through the REST API.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from foreman.agents.registry import registry
from foreman.engine.cf_runner import build_scope
from foreman.engine.policy import RunPolicy
from foreman.engine.workflow import load_workflow
from foreman.pg import TempPostgres
from foreman.tools.audit import AuditLog

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def test_prefect_yaml_deploys_each_example_workflow_with_the_schedule_its_file_carries() -> None:
    from foreman.flows import examples
    deployments = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    assert {"file-search", "plan-and-run", "run-workflow"} <= set(deployments)
    for workflow_file in sorted(ROOT.glob("workflows/*/workflow.yaml")):
        workflow = load_workflow(workflow_file, build_scope(registry, RunPolicy.build(check_workspace=False)))
        deployment = deployments.get(workflow.name)
        assert deployment, f"prefect.yaml has no deployment for {workflow_file}"
        assert deployment["parameters"]["path"] == str(workflow_file.relative_to(ROOT))
        assert deployment["parameters"].get("params", {}) == workflow.defaults  # the form shows the file's values
        assert [s["cron"] for s in deployment["schedules"]] == [workflow.schedule.cron]
        assert [s["active"] for s in deployment["schedules"]] == [False]  # shipped switched off
        module, _, attribute = deployment["entrypoint"].partition(":")
        assert module == "flows/examples.py" and getattr(examples, attribute).name == "run-workflow"


# --- the whole setup, end to end ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RetryingClient(httpx.Client):
    """Retries 429/502/503 as Prefect's own client and UI do: a busy SQLite server answers 503."""

    def send(self, request: httpx.Request, **kwargs) -> httpx.Response:  # type: ignore[override]
        for attempt in range(6):
            response = super().send(request, **kwargs)
            if response.status_code not in {429, 502, 503}:
                return response
            time.sleep(0.5 * 2 ** attempt)
        return response


class Stack:
    """The processes a user runs, with their own Prefect and Foreman homes."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.api = f"http://127.0.0.1:{free_port()}/api"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FOREMAN_"))}
        self.env.update({
            "PREFECT_HOME": str(tmp / "prefect"), "PREFECT_API_URL": self.api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "1",
            "FOREMAN_HOME": str(tmp / "foreman"), "FOREMAN_APPROVAL_POLL_S": "1",
        })
        self.processes: list[subprocess.Popen] = []
        self.http = RetryingClient(base_url=self.api, timeout=30)

    def start(self, *args: str, log: str) -> subprocess.Popen:
        process = subprocess.Popen([str(BIN / "prefect"), *args], cwd=ROOT, env=self.env, start_new_session=True,
                                   stdout=(self.tmp / log).open("w"), stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def run(self, *args: str, tool: str = "prefect") -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / tool), *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=300, check=False)

    def cli(self, *args: str, tool: str = "prefect") -> str:
        done = self.run(*args, tool=tool)
        assert done.returncode == 0, f"{tool} {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def wait_healthy(self, timeout_s: float = 600) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                if self.http.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.processes[0].poll() is None, (self.tmp / "server.log").read_text()[-3000:]
            time.sleep(1)
        raise AssertionError("the Prefect server did not become healthy")

    def deployments(self) -> dict[str, dict]:
        return {d["name"]: d for d in self.http.post("/deployments/filter", json={}).json()}

    def run_state(self, run_id: str) -> str:
        return self.http.get(f"/flow_runs/{run_id}").json()["state"]["type"]

    def wait_state(self, run_id: str, wanted: set[str], timeout_s: float = 300) -> str:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            state = self.run_state(run_id)
            if state in wanted:
                return state
            assert state not in FINAL, f"run ended {state}; worker log:\n{(self.tmp / 'worker.log').read_text()[-4000:]}"
            time.sleep(1)
        raise AssertionError(f"run stayed {self.run_state(run_id)}; worker log:\n{(self.tmp / 'worker.log').read_text()[-4000:]}")

    def run_inputs(self, run_id: str, prefix: str, parts: set[str], timeout_s: float = 30) -> dict[str, object]:
        """The paused run's form inputs; Prefect saves them just after the PAUSED state, so wait for them."""
        deadline = time.time() + timeout_s
        while True:
            found = {i["key"]: json.loads(i["value"]) for i in self.http.post(
                f"/flow_runs/{run_id}/input/filter", json={"prefix": prefix, "limit": 10}).json()}
            if {f"{prefix}-{part}" for part in parts} <= set(found) or time.time() > deadline:
                return found
            time.sleep(0.5)

    def summary(self, run_id: str) -> dict[str, str]:
        artifacts = self.http.post("/artifacts/filter", json={
            "artifacts": {"flow_run_id": {"any_": [run_id]}, "key": {"any_": ["summary"]}}}).json()
        rows = json.loads(artifacts[0]["data"])
        return {row["sub-task"]: row["status"] for row in rows}

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The server on its default SQLite file, and on a real PostgreSQL server (the README's setting)."""
    stack = Stack(tmp_path_factory.mktemp(f"always-on-{request.param}"))
    with contextlib.ExitStack() as cleanup:
        if request.param == "postgres":
            postgres = TempPostgres()
            cleanup.callback(postgres.remove)
            postgres.start()
            stack.env["PREFECT_API_DATABASE_CONNECTION_URL"] = postgres.create_database("prefect")
        cleanup.callback(stack.stop)
        stack.start("server", "start", "--host", "127.0.0.1", "--port", stack.api.split(":")[-1].split("/")[0],
                    log="server.log")
        stack.wait_healthy()
        yield stack


def chores(folder: Path) -> Path:
    """The user's chores: A -> B -> C only if B found something; D needs a person's approval."""
    folder.mkdir()
    (folder / "a_check.py").write_text(
        'import json, pathlib\npathlib.Path("a.done").write_text("ok")\nprint(json.dumps({"disk_percent": 71}))\n')
    (folder / "b_prune.py").write_text(
        "import json, os, pathlib\nseen = json.loads(os.environ['FOREMAN_INPUTS'])['a_check']\n"
        'pathlib.Path("b.done").write_text(str(seen))\nprint("pruned nothing")\n'
        'print(json.dumps({"pruned": 0, "over_limit": seen["disk_percent"] > 80}))\n')
    (folder / "c_alert.py").write_text('import pathlib\npathlib.Path("c.done").write_text("alert")\n')
    (folder / "d_rotate.py").write_text('import pathlib\npathlib.Path("d.done").write_text("rotated")\n')
    path = folder / "workflow.yaml"
    path.write_text("""\
name: chores
schedule: {cron: "30 4 * * *", timezone: Europe/Berlin}
steps:
  - {id: a_check, script: a_check.py}
  - {id: b_prune, script: b_prune.py, depends_on: [a_check]}
  - {id: c_alert, script: c_alert.py, depends_on: [b_prune], condition: b_prune.over_limit}
  - {id: d_rotate, script: d_rotate.py, depends_on: [b_prune], approval: true}
""")
    return path


@pytest.mark.timeout(1800)  # includes the module's server start (migrations: minutes on 2 busy cores)
def test_deployed_workflow_runs_on_a_worker_and_waits_for_a_person(stack: Stack, tmp_path: Path) -> None:
    stack.cli("work-pool", "create", "foreman", "--type", "process")
    stack.cli("--no-prompt", "deploy", "--all")
    deployments = stack.deployments()
    assert {"file-search", "plan-and-run", "run-workflow", "log-pipeline", "content-pipeline"} <= set(deployments)
    log_pipeline = deployments["log-pipeline"]
    assert [(s["schedule"]["cron"], s["active"]) for s in log_pipeline["schedules"]] == [("0 3 * * *", False)]
    form = log_pipeline["parameter_openapi_schema"]
    assert {"path", "params"} <= set(form["properties"])  # a form in the UI
    assert log_pipeline["parameters"]["params"] == {"source": "incoming", "min_errors": 1}  # prefilled
    typed = form["definitions"][form["properties"]["params"]["$ref"].split("/")[-1]]["properties"]
    assert typed["min_errors"]["type"] == "integer" and typed["source"]["description"]  # typed fields, not JSON
    planner_form = deployments["plan-and-run"]["parameter_openapi_schema"]["properties"]
    assert not {"plan", "resume", "approve_in"} & set(planner_form)  # internals are not offered to a person
    assert planner_form["objective"]["title"] == "Objective" and planner_form["max_llm_calls"]["description"]

    # the shipped example is not taken over, and its schedule stays off
    refused = stack.run("workflow", "deploy", "workflows/log_pipeline/workflow.yaml", tool="foreman")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "run-workflow/log-pipeline already exists" in refused.stderr and "Traceback" not in refused.stderr
    shipped = stack.deployments()["log-pipeline"]
    assert shipped["entrypoint"] == log_pipeline["entrypoint"] and not shipped["schedules"][0]["active"]

    # the user's own folder of scripts: deployed with the schedule its file carries, switched off
    workflow = chores(tmp_path / "chores")
    stack.cli("workflow", "deploy", str(workflow), tool="foreman")
    [schedule] = stack.deployments()["chores"]["schedules"]
    assert schedule["schedule"]["cron"] == "30 4 * * *" and schedule["schedule"]["timezone"] == "Europe/Berlin"
    assert schedule["active"] is False  # nobody asked for it to run by itself
    stack.cli("workflow", "deploy", str(workflow), "--schedule-on", tool="foreman")
    assert stack.deployments()["chores"]["schedules"][0]["active"] is True
    stack.cli("workflow", "deploy", str(workflow), tool="foreman")  # a re-deploy keeps what the person chose
    assert stack.deployments()["chores"]["schedules"][0]["active"] is True

    stack.start("worker", "start", "--pool", "foreman", log="worker.log")
    run = stack.http.post(f"/deployments/{deployments['run-workflow']['id']}/create_flow_run",
                          json={"parameters": {"path": str(workflow)}}).json()
    run_id = run["id"]
    stack.wait_state(run_id, {"PAUSED"}, timeout_s=300)
    assert (workflow.parent / "a.done").exists() and not (workflow.parent / "d.done").exists()

    form = stack.run_inputs(run_id, "paused-approve-d-rotate", {"schema", "description"})
    # the form the UI renders, and above it the step's context
    schema = form["paused-approve-d-rotate-schema"]
    assert {"decision", "comment", "decided_by"} <= set(schema["properties"]) and schema["required"] == ["decision"]
    description = form["paused-approve-d-rotate-description"]
    assert "d_rotate.py" in description and '"over_limit": false' in description
    waiting = stack.cli("approvals", tool="foreman")  # the same, for a person on a terminal
    assert run_id in waiting and "step d_rotate" in waiting, waiting
    resumed = stack.http.post(f"/flow_runs/{run_id}/resume", json={"run_input": {
        "decision": "approve", "comment": "rotate tonight", "decided_by": "sam"}})
    assert resumed.is_success and resumed.json().get("status") == "ACCEPT", \
        f"{resumed.status_code} {resumed.text}\n{(stack.tmp / 'server.log').read_text()[-4000:]}"
    assert stack.wait_state(run_id, {"COMPLETED"}) == "COMPLETED"

    home = Path(stack.env["FOREMAN_HOME"])
    statuses = stack.summary(run_id)  # the run's summary table, as the UI shows it
    assert statuses == {"a_check": "COMPLETED", "b_prune": "COMPLETED", "c_alert": "SKIPPED",
                        "d_rotate": "COMPLETED", "TOTAL": "COMPLETED"}, statuses
    assert not (workflow.parent / "c.done").exists() and (workflow.parent / "d.done").read_text() == "rotated"
    assert json.loads((workflow.parent / "b.done").read_text().replace("'", '"')) == {"disk_percent": 71}
    [decision] = AuditLog(home / "audit.sqlite3").decisions(run_id)
    assert (decision.step, decision.decision, decision.decided_by, decision.comment) == \
        ("d_rotate", "approved", "sam", "rotate tonight")
    assert decision.flow_name == "run-workflow" and not decision.timed_out

    logs = stack.http.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}).json()
    assert any("pruned nothing" in entry["message"] for entry in logs)  # script output reaches the run's log


# --- several workers ---------------------------------------------------------------------

STEP = """\
import os, sys
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "steps.log"), "a") as log:
    log.write(f"{sys.argv[1]} {sys.argv[2]} {os.getpid()}\\n")
print('{"ok": true}')
"""


def counted_workflow(folder: Path) -> Path:
    """Four script steps that each append `run step pid` to steps.log: a duplicate shows twice."""
    folder.mkdir()
    (folder / "step.py").write_text(STEP)
    step = '{{id: {0}, script: {{path: step.py, args: ["${{tag}}", {0}]}}{1}}}'
    path = folder / "workflow.yaml"
    path.write_text("name: counted\nparams:\n  tag: {type: str, default: x}\nsteps:\n" + "\n".join([
        "  - " + step.format("a", ""), "  - " + step.format("b", ", depends_on: [a]"),
        "  - " + step.format("c", ", depends_on: [a]"), "  - " + step.format("d", ", depends_on: [b, c]")]) + "\n")
    return path


@pytest.mark.timeout(1800)  # a fresh server's migrations and four flow-run processes, on a busy 2-core box
def test_two_workers_share_a_limited_queue_and_never_run_a_step_twice(stack: Stack, tmp_path: Path) -> None:
    if "run-workflow" not in stack.deployments():  # this test alone: the setup the first one makes
        stack.run("work-pool", "create", "foreman", "--type", "process")
        stack.cli("--no-prompt", "deploy", "--all")
    for process in stack.processes[1:]:  # the earlier test's worker: this test runs exactly two
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
    stack.cli("work-queue", "set-concurrency-limit", "default", "2", "--pool", "foreman")
    workers = [stack.start("worker", "start", "--pool", "foreman", "--name", f"worker-{i}", log=f"worker-{i}.log")
               for i in range(2)]
    workflow = counted_workflow(tmp_path / "counted")
    deployment = stack.deployments()["run-workflow"]["id"]
    runs = [stack.http.post(f"/deployments/{deployment}/create_flow_run", json={
        "parameters": {"path": str(workflow), "params": {"tag": f"r{i}"}}}).json()["id"] for i in range(4)]

    deadline = time.time() + 600
    while time.time() < deadline:
        states = [stack.run_state(run) for run in runs]
        if all(s in FINAL for s in states):
            break
        time.sleep(0.5)
    assert states == ["COMPLETED"] * 4, states
    # Not asserted: the queue's limit is applied when a worker polls, so two workers polling at the
    # same moment can each take runs up to it (seen: 3 PENDING with a limit of 2).
    lines = [line.split() for line in (workflow.parent / "steps.log").read_text().splitlines()]
    done = sorted((tag, step) for tag, step, _ in lines)
    assert done == sorted((f"r{i}", s) for i in range(4) for s in "abcd")  # every step of every run, once
    # Both workers may try the same run; the server lets one move it to PENDING and aborts the other.
    logs = "".join((stack.tmp / f"worker-{i}.log").read_text() for i in range(2))
    started = {run: logs.count(f"submitting flow run '{run}'") - logs.count(f"Aborted submission of flow run '{run}'")
               for run in runs}
    assert set(started.values()) == {1}, started  # each run started by exactly one worker
    assert all(w.poll() is None for w in workers)
