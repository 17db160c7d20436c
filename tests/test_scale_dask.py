"""Plan nodes on Dask (FOREMAN_TASK_RUNNER=dask): same results as threads, tools audited from worker processes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cloudpickle
import pytest

from foreman.settings import Settings, reset_settings

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test's own tasks travel to the workers by value

SCRIPT = """\
import json, os, time
inputs = json.loads(os.environ.get("FOREMAN_INPUTS") or "{}")
guard = os.getppid()  # the script's guard; its parent is the process that ran the node
runner = int(open(f"/proc/{guard}/stat").read().rsplit(")", 1)[1].split()[1])
total = 1 + sum(v["total"] for v in inputs.values())
print(json.dumps({"total": total, "runner": runner}))
"""


def wide_workflow(folder: Path) -> Path:
    folder.mkdir()
    (folder / "step.py").write_text(SCRIPT)
    steps = ["  - {id: a, script: step.py}"]
    steps += [f"  - {{id: b{i}, script: step.py, depends_on: [a]}}" for i in range(6)]
    steps += ["  - {id: c, script: step.py, depends_on: [" + ", ".join(f"b{i}" for i in range(6)) + "]}"]
    path = folder / "workflow.yaml"
    path.write_text("name: wide\nsteps:\n" + "\n".join(steps) + "\n")
    return path


@pytest.fixture()
def api_in_environment(prefect_server: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dask workers are new processes: they reach the test's Prefect server through the environment."""
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("PREFECT_API_URL", str(PREFECT_API_URL.value()))


def test_the_setting_picks_the_task_runner() -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from foreman.engine.task_runners import task_runner

    threads = task_runner(Settings(task_threads=3))
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    local = task_runner(Settings(task_runner="dask", dask_workers=3))
    assert isinstance(local, DaskTaskRunner) and local.cluster_kwargs["n_workers"] == 3
    assert local.cluster_kwargs["processes"] is True
    remote = task_runner(Settings(task_runner="dask", dask_address="tcp://10.0.0.5:8786"))
    assert remote.address == "tcp://10.0.0.5:8786"
    with pytest.raises(ValueError, match="task_runner"):
        Settings(task_runner="ray")


def test_a_workflow_gives_the_same_results_on_threads_and_on_dask_processes(
        api_in_environment: None, foreman_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from foreman.engine.task_runners import task_runner
    from foreman.flows.workflow import run_workflow

    path = wide_workflow(tmp_path / "wide")
    results = {}
    for kind in ("threads", "dask"):
        monkeypatch.setenv("FOREMAN_TASK_RUNNER", kind)
        reset_settings()
        result = run_workflow.with_options(task_runner=task_runner())(path=str(path))
        results[kind] = result
        assert result.status == "COMPLETED", result
    totals = {kind: {step: value["total"] for step, value in r.results.items()} for kind, r in results.items()}
    assert totals["threads"] == totals["dask"] == {"a": 1, **{f"b{i}": 2 for i in range(6)}, "c": 13}
    runners = {kind: {value["runner"] for value in r.results.values()} for kind, r in results.items()}
    assert runners["threads"] == {os.getpid()}  # threads: every node in the flow's own process
    assert os.getpid() not in runners["dask"] and len(runners["dask"]) >= 1  # dask: worker processes


def _read(path: str) -> tuple[str, int]:
    from foreman.errors import ToolRefused
    from foreman.settings import get_settings
    from foreman.tools.catalog import ToolEnv, build_tools

    [read_file] = build_tools(["read_file"], ToolEnv.from_settings(get_settings()))
    try:
        return read_file(path=path), os.getpid()
    except ToolRefused as refused:
        return f"refused: {refused}", os.getpid()


def test_tools_called_in_dask_workers_keep_their_guards_and_every_audit_record(
        api_in_environment: None, foreman_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect import flow, task

    from foreman.engine.task_runners import task_runner
    from foreman.tools.audit import AuditLog

    workspace = tmp_path / "ws"
    workspace.mkdir()
    for i in range(8):
        (workspace / f"note{i}.txt").write_text(f"note {i}")
    monkeypatch.setenv("FOREMAN_WORKSPACE", str(workspace))
    monkeypatch.setenv("FOREMAN_TASK_RUNNER", "dask")
    reset_settings()

    read = task(_read, name="read")

    @flow(name="dask-tools", task_runner=task_runner())
    def reads() -> tuple[list, str]:
        from prefect.context import FlowRunContext

        futures = [read.submit(f"note{i}.txt") for i in range(8)] + [read.submit("../outside.txt")]
        return [f.result() for f in futures], str(FlowRunContext.get().flow_run.id)

    answers, run_id = reads()
    assert [text for text, _ in answers[:8]] == [f"note {i}" for i in range(8)]
    assert answers[8][0].startswith("refused:")  # the workspace guard holds in the worker too
    assert os.getpid() not in {pid for _, pid in answers}
    records = AuditLog(foreman_home / "audit.sqlite3").for_run(run_id)
    assert sorted(r.arguments["path"] for r in records) == \
        sorted([f"note{i}.txt" for i in range(8)] + ["../outside.txt"])  # nothing lost across processes
    assert [r.outcome for r in records].count("refused") == 1


BUDGET_WORKFLOW = """\
name: budgeted
steps:
""" + "".join(f"  - {{id: s{i}, agent: generalist, instructions: Say done., retries: 0}}\n" for i in range(3))


@pytest.mark.parametrize("kind", ["threads", "dask"])
def test_the_model_call_budget_holds_for_agent_steps_in_dask_workers_too(
        kind: str, api_in_environment: None, foreman_home: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Three one-call agent steps, a budget of two calls: two run, the third is not started.

    The model is a real local OpenAI-compatible server, reached from the worker processes by
    the same settings; it counts the calls that were really made, whichever process made them."""
    from foreman.engine.records import NodeStatus
    from foreman.engine.task_runners import task_runner
    from foreman.errors import RunFailed
    from foreman.flows.workflow import run_workflow

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.load import FakeProvider

    path = tmp_path / "budgeted.yaml"
    path.write_text(BUDGET_WORKFLOW)
    provider = FakeProvider().start()
    try:
        monkeypatch.setenv("FOREMAN_MODEL", "openai-compatible/fake")
        monkeypatch.setenv("FOREMAN_BASE_URL", provider.url)
        monkeypatch.setenv("FOREMAN_API_KEY", "k")
        monkeypatch.setenv("FOREMAN_TASK_RUNNER", kind)
        reset_settings()
        with pytest.raises(RunFailed) as stopped:
            run_workflow.with_options(task_runner=task_runner())(path=str(path), max_llm_calls=2, ground=False)
    finally:
        provider.stop()
    result = stopped.value.result
    assert len(provider.arrivals) == 2  # the budget held: two model calls were made, not three
    assert result.llm_calls == 2 and result.tokens == 8  # and the run counted them (4 tokens a call)
    assert "budget max_llm_calls=2 reached" in result.stopped_by
    assert sorted(result.statuses.values()) == [NodeStatus.COMPLETED, NodeStatus.COMPLETED, NodeStatus.SKIPPED]
    assert all(result.results[s].startswith("done") for s, st in result.statuses.items() if st == "COMPLETED")
