"""`foreman.cf_adapter.speedups`: ControlFlow still works, in parallel, without its nested Prefect bookkeeping.

What is proven, with the real ControlFlow + Prefect path and a scripted model:
* a multi-turn task that calls an audited Foreman tool and a probe tool completes with the
  right result inside a Prefect flow; the tool result reaches the next turn; the audit log
  has the call; the tools ran inside the sub-task's own Prefect task run (no nested
  "Tool call" run) and no per-reply artifacts were written;
* two sub-tasks submitted together overlap: each one's model call starts before the other
  one's finishes (recorded turn times, not a wall-clock threshold);
* the cuts are idempotent, and reversible to ControlFlow's and Prefect's stock behaviour
  (which the same probes detect, so the checks above are not vacuous).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import controlflow as cf
import pytest
from prefect import flow, task
from prefect.cache_policies import NONE
from prefect.context import FlowRunContext, TaskRunContext

from foreman.agents.scripted import ScriptedChatModel, call, succeed
from foreman.cf_adapter.speedups import NESTED_TASK_METHODS, apply_speedups, speedups_state
from foreman.cf_adapter.taskrun import run_task
from foreman.tools.catalog import ToolEnv, build_tool

CF_ARTIFACT_KEYS = {"agent-message", "tool-result"}


def _restore(state: dict[str, bool]) -> None:
    apply_speedups(
        nested_task_runs=not state["nested_task_runs_off"],
        artifacts=not state["artifacts_off"],
        flow_heartbeat_join=not state["flow_heartbeat_join_off"],
    )


@pytest.fixture()
def speedups() -> Iterator[None]:
    """Speedups on for one test; whatever was in effect before comes back afterwards."""
    before = speedups_state()
    apply_speedups()
    yield
    _restore(before)


@pytest.fixture()
def stock() -> Iterator[None]:
    """ControlFlow's and Prefect's stock behaviour for one test."""
    before = speedups_state()
    apply_speedups(nested_task_runs=True, artifacts=True, flow_heartbeat_join=True)
    yield
    _restore(before)


def _artifact_keys(flow_run_id: Any) -> set[str]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key for a in artifacts if a.key}


def _run_tool_task(workspace: Path) -> dict[str, Any]:
    """A sub-task (one Prefect task run): its agent reads a file, probes where it runs, answers."""
    env = ToolEnv.from_settings(workspace=workspace)
    seen: dict[str, Any] = {}

    def where_am_i() -> str:
        """Report the Prefect task run this tool executes in."""
        run = TaskRunContext.get()
        seen["tool_task_run"] = (run.task_run.id, run.task_run.name) if run else None
        return "noted"

    model = ScriptedChatModel(
        replies=[
            call("read_file", path="todo.txt"),
            call("where_am_i"),
            succeed("Proxmox"),
        ]
    )

    @task(task_run_name="sub-task", cache_policy=NONE)
    def sub_task() -> str:
        seen["node_task_run"] = TaskRunContext.get().task_run.id
        job = cf.Task(
            "Which host needs a new fan? Read todo.txt.",
            result_type=str,
            tools=[build_tool("read_file", env), where_am_i],
            agents=[cf.Agent(name="reader", model=model)],
        )
        return run_task(job, audit=env.audit)

    @flow(name="speedups-tool-task")
    def tool_flow() -> str:
        seen["flow_run_id"] = FlowRunContext.get().flow_run.id
        return sub_task()

    seen["result"] = tool_flow()
    seen["turns"] = model.turns
    seen["audit"] = env.audit.for_run(str(seen["flow_run_id"]))
    seen["artifact_keys"] = _artifact_keys(seen["flow_run_id"])
    return seen


@pytest.mark.usefixtures("prefect_server", "foreman_home", "speedups")
def test_multi_turn_task_with_tools_completes_inside_the_sub_task_run(workspace: Path) -> None:
    seen = _run_tool_task(workspace)

    assert seen["result"] == "Proxmox"
    assert len(seen["turns"]) == 3
    # the file tool's result was fed back to the model on the next turn
    assert any("pve2" in str(m.content) for m in seen["turns"][1].messages)
    # Foreman's audit log is written by the tool wrapper, not by Prefect: still there
    [record] = [r for r in seen["audit"] if r.tool == "read_file"]
    assert (record.outcome, record.agent) == ("ok", "reader")
    assert record.arguments == {"path": "todo.txt"}
    # the tool ran in the sub-task's own task run: no nested "Tool call: where_am_i" run
    tool_run_id, tool_run_name = seen["tool_task_run"]
    assert tool_run_id == seen["node_task_run"]
    assert tool_run_name == "sub-task"
    # no per-reply / per-tool-call markdown artifacts
    assert not (seen["artifact_keys"] & CF_ARTIFACT_KEYS)


@pytest.mark.usefixtures("prefect_server", "foreman_home", "stock")
def test_stock_behaviour_is_restored_and_the_probes_see_it(workspace: Path) -> None:
    seen = _run_tool_task(workspace)

    assert seen["result"] == "Proxmox"
    tool_run_id, tool_run_name = seen["tool_task_run"]
    assert tool_run_id != seen["node_task_run"]
    assert tool_run_name.startswith("Tool call: where_am_i")
    assert CF_ARTIFACT_KEYS <= seen["artifact_keys"]


@pytest.mark.usefixtures("prefect_server", "foreman_home", "speedups")
def test_two_sub_tasks_submitted_together_overlap() -> None:
    model = ScriptedChatModel(responder=lambda turn: succeed(1), latency_s=0.5)
    audit = ToolEnv.from_settings().audit

    @task(task_run_name="node-{i}", cache_policy=NONE)
    def node(i: int) -> int:
        agent = cf.Agent(name=f"agent-{i}", model=model)
        job = cf.Task(f"Say 1 (node {i})", result_type=int, agents=[agent])
        return run_task(job, audit=audit)

    @flow(name="speedups-two-nodes")
    def two_nodes() -> list[int]:
        futures = [node.submit(i) for i in range(2)]
        return [f.result() for f in futures]

    assert two_nodes() == [1, 1]
    first, second = sorted(model.turns, key=lambda t: t.started)
    assert len(model.turns) == 2
    assert set(first.task_ids).isdisjoint(second.task_ids)  # one model call per node
    # each model call started before the other one finished: they were in flight together
    assert second.started < first.finished
    assert first.started < second.finished


def test_apply_is_idempotent_and_reversible() -> None:
    from prefect.tasks import Task as PrefectTask

    before = speedups_state()
    try:
        apply_speedups(nested_task_runs=True, artifacts=True, flow_heartbeat_join=True)
        originals = {key: _class_attr(key) for key in NESTED_TASK_METHODS}
        assert all(isinstance(v, PrefectTask) for v in originals.values())

        apply_speedups()
        once = {key: _class_attr(key) for key in NESTED_TASK_METHODS}
        apply_speedups()
        assert {key: _class_attr(key) for key in NESTED_TASK_METHODS} == once
        assert all(once[key] is originals[key].fn for key in NESTED_TASK_METHODS)
        assert speedups_state() == {
            "nested_task_runs_off": True,
            "artifacts_off": True,
            "flow_heartbeat_join_off": True,
        }

        apply_speedups(nested_task_runs=True, artifacts=True, flow_heartbeat_join=True)
        assert all(_class_attr(key) is originals[key] for key in NESTED_TASK_METHODS)
        assert not any(speedups_state().values())
    finally:
        _restore(before)


def _class_attr(key: tuple[str, str, str]) -> Any:
    import importlib

    module, cls, attr = key
    return getattr(importlib.import_module(module), cls).__dict__[attr]


def _heartbeat_thread_alive_after_exit() -> bool:
    """Enter and leave Prefect's flow-run heartbeat context; is its thread still running?"""
    import logging

    from prefect import flow_engine

    engine = SimpleNamespace(
        heartbeat_seconds=30,
        flow_run=None,
        logger=logging.getLogger("test-heartbeat"),
        _build_heartbeat_event_template=lambda: (None, None),
        _emit_flow_run_heartbeat=lambda resource, related: None,
    )
    before = set(threading.enumerate())
    with flow_engine._send_heartbeats(engine):
        [thread] = set(threading.enumerate()) - before
    alive = thread.is_alive()
    thread.join(timeout=5)
    return alive


@pytest.mark.usefixtures("speedups")
def test_flow_end_does_not_wait_for_the_heartbeat_thread() -> None:
    # The thread sleeps in 1 s steps; leaving at once finds it alive unless it was joined.
    assert _heartbeat_thread_alive_after_exit()


@pytest.mark.usefixtures("stock")
def test_stock_flow_end_joins_the_heartbeat_thread() -> None:
    assert not _heartbeat_thread_alive_after_exit()
