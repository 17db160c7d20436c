"""The planner flow end to end with a scripted model: plan, repair, run, explain, learn."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.settings import PREFECT_API_URL

from foreman.agents.models import use_model
from foreman.agents.planner import PlanningFailed, draft_schema, readable_title, to_plan
from foreman.agents.registry import registry
from foreman.agents.scripted import (
    ScriptedChatModel,
    ScriptedReply,
    Turn,
    fail,
    succeed,
    succeed_model,
)
from foreman.engine.cf_runner import ControlFlowRunner, build_scope
from foreman.engine.plan import SubTask
from foreman.engine.policy import RunPolicy
from foreman.engine.store import AgentStats, run_store
from foreman.errors import RunFailed
from foreman.flows.planner import plan_and_run
from foreman.settings import get_settings
from foreman.tools.catalog import ToolEnv


def prompt(turn: Turn) -> str:
    return "\n".join(str(m.content) for m in turn.messages)


def node(id: str, agent: str = "generalist", **kw: Any) -> dict[str, Any]:
    return {"id": id, "title": f"STEP-{id.upper()}", "instructions": f"Do {id}.", "agent": agent, **kw}


class Script:
    """Scripted planner drafts, per-step node replies, and the writer's answer."""

    def __init__(self, drafts: list[ScriptedReply], steps: dict[str, Callable[[int], ScriptedReply]] | None = None,
                 latency_s: float = 0.0) -> None:
        self.drafts = list(drafts)
        self.steps = steps or {}
        self.counts: dict[str, int] = {}
        self.planner_prompts: list[str] = []
        self.lock = threading.Lock()
        self.model = ScriptedChatModel(responder=self.respond, latency_s=latency_s)

    def respond(self, turn: Turn) -> ScriptedReply:
        text = prompt(turn)
        if "a plan for this objective" in text or "Revise the remaining plan" in text or "Repair the previous plan" in text:
            with self.lock:
                self.planner_prompts.append(text)
                return self.drafts.pop(0)
        if "Answer the objective" in text:
            return succeed("FINAL ANSWER")
        sid = text.split("STEP-")[1].split()[0].rstrip(".,:\"'").lower()
        with self.lock:
            n = self.counts.get(sid, 0)
            self.counts[sid] = n + 1
        reply = self.steps.get(sid)
        return reply(n) if reply else succeed(f"result of {sid}")


def draft(*tasks: dict[str, Any], rationale: str = "because") -> ScriptedReply:
    return succeed_model(rationale=rationale, tasks=list(tasks))


pytestmark = pytest.mark.usefixtures("prefect_server", "foreman_home")


def artifacts_of(flow_run_id: str) -> dict[str, dict]:
    api = PREFECT_API_URL.value()
    body = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200, "offset": 0}
    rows = httpx.post(f"{api}/artifacts/filter", json=body, timeout=30).json()
    return {row["key"]: row for row in rows if row.get("key")}


def test_objective_is_planned_run_explained_and_answered(workspace: Path) -> None:
    script = Script([draft(node("facts", "researcher", tools=["read_file"]), node("count"),
                           node("report", "writer", depends_on=["facts", "count"]), rationale="read, count, report")])
    with use_model(script.model):
        state = plan_and_run("summarize the report", workspace=str(workspace), ground=False, return_state=True)
    result = state.result()

    assert result.answer == "FINAL ANSWER"
    assert result.status == "COMPLETED"
    assert set(result.results) == {"facts", "count", "report"}
    assert not result.repaired_plan
    # the planner saw the registry and the tools as data
    assert "researcher" in script.planner_prompts[0] and "read_file" in script.planner_prompts[0]

    keys = artifacts_of(str(state.state_details.flow_run_id))
    assert {"plan", "progress", "summary", "plan-final"} <= set(keys)
    plan_md = keys["plan"]["data"]
    assert "read, count, report" in plan_md and "```mermaid" in plan_md and "facts --> report" in plan_md
    summary = {row["sub-task"]: row for row in json.loads(keys["summary"]["data"])}
    assert summary["TOTAL"]["llm_calls"] == 3 and summary["report"]["agent"] == "writer"


def test_cyclic_plan_is_refused_and_repaired_with_the_exact_errors(workspace: Path) -> None:
    cyclic = draft(node("a", depends_on=["b"]), node("b", depends_on=["a"]))
    script = Script([cyclic, draft(node("a"), node("b", depends_on=["a"]))])
    with use_model(script.model):
        result = plan_and_run("do a then b", workspace=str(workspace), ground=False)
    assert result.repaired_plan
    assert "dependency cycle" in script.planner_prompts[1]
    assert result.statuses == {"a": "COMPLETED", "b": "COMPLETED"}


def test_out_of_scope_tool_in_a_plan_is_refused_before_anything_runs(workspace: Path) -> None:
    # the flow allows code, but run_python is outside the generalist's scope
    bad = draft(node("calc", tools=["run_python"]))
    script = Script([bad, bad, bad])
    with use_model(script.model), pytest.raises(PlanningFailed) as info:
        plan_and_run("compute something", workspace=str(workspace), ground=False, allow_code=True)
    assert "calc.tools: tool 'run_python' is outside the scope of generalist" in str(info.value)
    assert len(script.planner_prompts) == 3  # first draft + two repairs, then it gives up
    assert script.counts == {}  # no sub-task ran


def test_unknown_tool_from_the_model_is_refused_by_the_schema_then_fixed(workspace: Path) -> None:
    unknown = draft(node("a", tools=["teleport"]))
    script = Script([unknown, draft(node("a"))])
    with use_model(script.model):
        result = plan_and_run("anything", workspace=str(workspace), ground=False)
    assert result.statuses == {"a": "COMPLETED"}
    # the second planner turn saw the validation error ControlFlow returned for the first draft
    assert "teleport" in script.planner_prompts[1]


def test_draft_schema_lists_agents_and_tools_as_enums() -> None:
    scope = build_scope(registry, RunPolicy.build(allowed_tools=["read_file", "notify_user"], check_workspace=False))
    schema = draft_schema(scope).model_json_schema()
    defs = schema["$defs"]
    assert set(defs["AgentName"]["enum"]) == set(registry.names())
    assert set(defs["ToolName"]["enum"]) == {"read_file", "notify_user"}
    assert defs["DraftTask"]["properties"]["tools"]["maxItems"] == 4


def test_failed_step_triggers_a_replan_that_keeps_finished_results(workspace: Path) -> None:
    script = Script(
        [draft(node("a"), node("b", depends_on=["a"], retries=0)), draft(node("b2", depends_on=["a"]))],
        steps={"b": lambda n: fail("cannot")},
    )
    with use_model(script.model):
        result = plan_and_run("a then b", workspace=str(workspace), ground=False)
    assert result.revisions == 1
    assert script.counts["a"] == 1
    assert result.statuses == {"a": "COMPLETED", "b2": "COMPLETED"}
    assert "Sub-task b failed" in script.planner_prompts[1] and "result of a" in script.planner_prompts[1]


def test_past_runs_are_lessons_for_the_next_plan(workspace: Path) -> None:
    first = Script([draft(node("a"))])
    with use_model(first.model):
        plan_and_run("rotate the backup token", workspace=str(workspace), ground=False)
    second = Script([draft(node("a"))])
    with use_model(second.model):
        plan_and_run("rotate the backup token again", workspace=str(workspace), ground=False)
    assert "lessons_from_similar_past_runs" in second.planner_prompts[0]
    assert "rotate the backup token" in second.planner_prompts[0].split("lessons_from_similar_past_runs")[1]


def test_resume_does_not_redo_finished_subtasks(workspace: Path) -> None:
    crashing = Script([draft(node("a"), node("b", depends_on=["a"], retries=0))], steps={"b": lambda n: fail("crash")})
    with use_model(crashing.model), pytest.raises(RunFailed) as failed:
        plan_and_run("two steps", workspace=str(workspace), ground=False, max_replans=0)
    crashed = failed.value.result  # a failed run still hands back what it finished
    assert crashed.status == "FAILED" and crashed.results == {"a": crashed.results["a"]}

    again = Script([])  # no planner call expected: the stored plan is reused
    with use_model(again.model):
        resumed = plan_and_run("two steps", workspace=str(workspace), ground=False, resume=crashed.run_key)
    assert resumed.reused == ["a"]
    assert again.counts == {"b": 1}
    assert resumed.status == "COMPLETED"


def test_capability_picks_the_best_agent_and_rests_a_failing_one(foreman_home, workspace: Path) -> None:
    settings = get_settings()
    env = ToolEnv.from_settings(settings, workspace=workspace)
    stats = {
        "generalist": AgentStats(agent="generalist", runs=10, successes=9, mean_duration_s=2.0,
                                 consecutive_failures=0, last_failure_at=None),
        "writer": AgentStats(agent="writer", runs=10, successes=4, mean_duration_s=1.0,
                             consecutive_failures=0, last_failure_at=None),
    }
    runner = ControlFlowRunner(env, registry, settings, policy=RunPolicy.build(workspace=workspace), stats=stats)
    sub = SubTask(id="s", title="s", instructions="i", capability="summarize")
    assert runner.choose_agent(sub, tried=[]) == "generalist"
    assert runner.choose_agent(sub, tried=["generalist"]) == "writer"  # a retry goes elsewhere

    import time

    stats["generalist"] = stats["generalist"].model_copy(update={"consecutive_failures": 3, "last_failure_at": time.time()})
    assert runner.choose_agent(sub, tried=[]) == "writer"  # circuit open: cooling down


def test_agent_stats_come_from_past_runs(foreman_home) -> None:
    store = run_store()
    for status in ["COMPLETED", "FAILED", "FAILED"]:
        store.record_node("r", "n", "coder", "code", status, 1.5, 1, None)
    stats = store.agent_stats()["coder"]
    assert (stats.runs, stats.successes, stats.consecutive_failures) == (3, 1, 2)
    assert stats.success_rate == pytest.approx(2 / 5)


def test_strict_schema_cannot_express_cycles_unknown_ids_or_out_of_scope_tools() -> None:
    from pydantic import ValidationError

    from foreman.agents.planner import strict_draft_schema, to_plan
    from foreman.engine.validate import validate_plan

    scope = build_scope(registry, RunPolicy.build(allowed_tools=["list_files", "read_file", "notify_user"],
                                                 check_workspace=False))
    schema = strict_draft_schema(scope, max_tasks=3)
    ok = schema(rationale="r", tasks=[
        {"id": "step1", "title": "read", "instructions": "i", "agent": "researcher", "tools": ["read_file"]},
        {"id": "step2", "title": "tell", "instructions": "i", "agent": "writer", "depends_on": ["step1"]},
    ])
    assert validate_plan(to_plan(ok, "o"), scope).order == ["step1", "step2"]
    bad_drafts = [
        [{"id": "step1", "title": "t", "instructions": "i", "agent": "writer", "tools": ["read_file"]}],  # not writer's
        [{"id": "step1", "title": "t", "instructions": "i", "agent": "writer", "depends_on": ["step2"]},  # forward
         {"id": "step2", "title": "t", "instructions": "i", "agent": "writer", "depends_on": ["step1"]}],
        [{"id": "step2", "title": "t", "instructions": "i", "agent": "writer"}],  # ids are fixed, in order
        [{"id": "step1", "title": "t", "instructions": "i", "agent": "wizard"}],
    ]
    for tasks in bad_drafts:
        with pytest.raises(ValidationError):
            schema(rationale="r", tasks=tasks)


def test_a_step_title_that_names_nothing_is_mended_from_its_instructions() -> None:
    draft = {"rationale": "read, then compare", "tasks": [
        {"id": "step1", "title": "6d9d0794", "agent": "generalist",
         "instructions": "Read the Wi-Fi notes and identify the guest network launch date. Quote it."},
        {"id": "step2", "title": "Compare the dates", "agent": "generalist", "depends_on": ["step1"],
         "instructions": "Compare the launch dates."},
        {"id": "step3", "title": "step3", "agent": "generalist", "depends_on": ["step2"],
         "instructions": "Write " + "a very long sentence " * 10},
    ]}
    plan = to_plan(draft, "Do the guest network launch dates agree?")
    first, second, third = (t.title for t in plan.tasks)
    assert first == "Read the Wi-Fi notes and identify the guest network launch date"
    assert second == "Compare the dates"  # a real title is kept as written
    assert readable_title("Facade", "Paint the front.") == "Facade"  # a word of hex letters is a word
    assert len(third) <= 80 and third.startswith("Write a very long sentence") and third.endswith("…")
