"""The engine on Prefect with scripted models: parallelism, conditions, retries, replans, budgets, resume."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from foreman.agents.models import use_model
from foreman.agents.registry import registry
from foreman.agents.scripted import ScriptedChatModel, ScriptedReply, Turn, fail, succeed
from foreman.engine.cf_runner import ControlFlowRunner, build_scope
from foreman.engine.executor import (
    ApprovalAnswer,
    Budgets,
    Engine,
    NodeStatus,
    ReplanRequest,
    RunReport,
    RunStatus,
)
from foreman.engine.plan import Plan, SubTask
from foreman.engine.policy import RunPolicy
from foreman.engine.store import run_store
from foreman.engine.validate import validate_plan
from foreman.settings import get_settings
from foreman.tools.catalog import ToolEnv

pytestmark = pytest.mark.usefixtures("prefect_server", "foreman_home")

ALLOWED = ["list_files", "read_file", "search_files", "notify_user"]


def step(id: str, **kw) -> SubTask:
    kw.setdefault("agent", "generalist")
    kw.setdefault("retries", 0)
    kw.setdefault("retry_backoff_s", 0)
    return SubTask(id=id, title=f"STEP-{id.upper()}", instructions=f"Do step {id}.", **kw)


def which_step(turn: Turn) -> str:
    """The id of the step this turn works on: its title is in ControlFlow's prompt."""
    text = "\n".join(str(m.content) for m in turn.messages)
    found = [part.split("STEP-")[1].split()[0].rstrip(".,:\"'").lower() for part in text.split("\n") if "STEP-" in part]
    assert found, "no step title in the prompt"
    return found[0]


def scripted(replies: dict[str, Callable[[int], ScriptedReply] | ScriptedReply], latency_s: float = 0.0) -> ScriptedChatModel:
    """Per-step replies; a callable gets the step's turn number (0-based)."""
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def respond(turn: Turn) -> ScriptedReply:
        sid = which_step(turn)
        with lock:
            n = counts.get(sid, 0)
            counts[sid] = n + 1
        reply = replies.get(sid, succeed(f"result of {sid}"))
        return reply(n) if callable(reply) else reply

    return ScriptedChatModel(responder=respond, latency_s=latency_s)


def run_plan(plan: Plan, model: ScriptedChatModel, workspace: Path, *, run_key: str = "run-1",
             budgets: Budgets | None = None, replanner=None, approver=None,
             approval_tools: list[str] | None = None) -> RunReport:
    settings = get_settings()
    env = ToolEnv.from_settings(settings, workspace=workspace)
    policy = RunPolicy.build(workspace=workspace, allowed_tools=ALLOWED, approval_tools=approval_tools)
    scope = build_scope(registry, policy)
    runner = ControlFlowRunner(env, registry, settings, policy=policy)
    engine = Engine(runner, scope, run_store(), budgets or Budgets(), replanner=replanner, approver=approver)

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=8))
    def go() -> RunReport:
        return engine.run(validate_plan(plan, scope), run_key)

    with use_model(model):
        return go()


def turns_of(model: ScriptedChatModel, sid: str) -> list[Turn]:
    return [t for t in model.turns if which_step(t) == sid]


def test_diamond_runs_its_middle_nodes_concurrently(workspace: Path) -> None:
    plan = Plan(objective="diamond", tasks=[
        step("a"), step("b", depends_on=["a"]), step("c", depends_on=["a"]), step("d", depends_on=["b", "c"]),
    ])
    model = scripted({}, latency_s=0.5)
    report = run_plan(plan, model, workspace)

    assert report.status == RunStatus.COMPLETED, {i: (o.status, o.error, o.reason) for i, o in report.outcomes.items()}
    assert {o.status for o in report.outcomes.values()} == {NodeStatus.COMPLETED}
    b, c = turns_of(model, "b")[0], turns_of(model, "c")[0]
    assert b.started < c.finished and c.started < b.finished, "b and c did not overlap"
    a, d = turns_of(model, "a")[0], turns_of(model, "d")[0]
    assert a.finished <= min(b.started, c.started) and d.started >= max(b.finished, c.finished)
    assert report.outcomes["d"].result == "result of d"
    assert report.usage.llm_calls == 4


def test_dependency_results_reach_the_next_step(workspace: Path) -> None:
    plan = Plan(tasks=[step("a", result="number"), step("b", depends_on=["a"])])
    model = scripted({"a": succeed(42)})
    run_plan(plan, model, workspace)
    prompt = "\n".join(str(m.content) for m in turns_of(model, "b")[0].messages)
    assert "42" in prompt and "results_of_earlier_steps" in prompt


def test_false_condition_skips_the_branch_and_its_dependants(workspace: Path) -> None:
    plan = Plan(on_failure="continue", tasks=[
        step("count", result="number"),
        step("big", depends_on=["count"], condition="count > 10"),
        step("after_big", depends_on=["big"]),
        step("small", depends_on=["count"], condition="count <= 10"),
    ])
    model = scripted({"count": succeed(3)})
    report = run_plan(plan, model, workspace)
    assert report.outcomes["big"].status == NodeStatus.SKIPPED
    assert "condition false" in report.outcomes["big"].reason
    assert report.outcomes["after_big"].status == NodeStatus.SKIPPED
    assert report.outcomes["small"].status == NodeStatus.COMPLETED
    assert turns_of(model, "big") == [] and turns_of(model, "after_big") == []
    assert report.status == RunStatus.COMPLETED


def test_failing_node_retries_then_replan_keeps_finished_results(workspace: Path) -> None:
    plan = Plan(objective="replan me", tasks=[
        step("a"), step("flaky", depends_on=["a"], retries=1), step("z", depends_on=["flaky"]),
    ])
    requests: list[ReplanRequest] = []

    def replanner(request: ReplanRequest) -> Plan:
        requests.append(request)
        return Plan(rationale="try another way", tasks=[
            step("steady", depends_on=["a"]), step("z", depends_on=["steady"]),
        ])

    model = scripted({"flaky": fail("tool broke")})
    report = run_plan(plan, model, workspace, replanner=replanner)

    assert len(turns_of(model, "flaky")) == 2  # first try + one retry
    assert len(turns_of(model, "a")) == 1      # never redone
    assert requests[0].failed == "flaky" and "tool broke" in requests[0].error
    assert requests[0].finished == {"a": "result of a"}
    assert len(report.revisions) == 1 and report.revisions[0].after_failure_of == "flaky"
    assert [t.id for t in report.plan.tasks] == ["a", "steady", "z"]
    assert report.outcomes["z"].status == NodeStatus.COMPLETED
    assert report.status == RunStatus.COMPLETED


def test_fail_fast_stops_scheduling_and_keeps_results(workspace: Path) -> None:
    plan = Plan(tasks=[step("a"), step("bad", depends_on=["a"]), step("later", depends_on=["bad"])])
    report = run_plan(plan, scripted({"bad": fail("no")}), workspace)
    assert report.status == RunStatus.FAILED
    assert "bad failed" in report.stopped_by
    assert report.outcomes["a"].result == "result of a"
    assert report.outcomes["later"].status == NodeStatus.SKIPPED


def test_node_that_runs_out_of_model_calls_is_failed_not_empty(workspace: Path) -> None:
    plan = Plan(tasks=[step("loop", max_llm_calls=2)])
    model = scripted({"loop": ScriptedReply(content="thinking...")})
    report = run_plan(plan, model, workspace)
    assert report.outcomes["loop"].status == NodeStatus.FAILED
    assert "model-call budget" in report.outcomes["loop"].error
    assert report.outcomes["loop"].result is None


@pytest.mark.parametrize(
    ("budgets", "expect"),
    [
        (Budgets(max_llm_calls=2), "max_llm_calls=2"),
        (Budgets(max_tokens=150), "max_tokens=150"),
        (Budgets(max_wall_s=0.3), "max_wall_s=0.3"),
    ],
)
def test_each_budget_stops_the_run_cleanly(workspace: Path, budgets: Budgets, expect: str) -> None:
    plan = Plan(tasks=[step("a"), step("b", depends_on=["a"]), step("c", depends_on=["b"]), step("d", depends_on=["c"])])
    report = run_plan(plan, scripted({}, latency_s=0.2), workspace, budgets=budgets)
    assert report.status == RunStatus.FAILED
    assert expect in report.stopped_by
    done = [i for i, o in report.outcomes.items() if o.status == NodeStatus.COMPLETED]
    assert done and done == ["a", "b", "c", "d"][: len(done)]
    assert all(report.outcomes[i].result == f"result of {i}" for i in done)
    assert report.outcomes["d"].status == NodeStatus.SKIPPED


def test_replan_budget_bounds_revisions(workspace: Path) -> None:
    plan = Plan(tasks=[step("bad")])
    calls = []

    def replanner(request: ReplanRequest) -> Plan:
        calls.append(request)
        return Plan(tasks=[step(f"bad{len(calls)}")])

    model = scripted({f"bad{i}": fail("still no") for i in range(1, 5)} | {"bad": fail("no")})
    report = run_plan(plan, model, workspace, replanner=replanner, budgets=Budgets(max_replans=2))
    assert len(calls) == 2
    assert report.status == RunStatus.FAILED


def test_rerun_of_a_crashed_run_reuses_finished_subtasks(workspace: Path) -> None:
    plan = Plan(tasks=[step("a"), step("b", depends_on=["a"]), step("c", depends_on=["b"])])
    crashed = run_plan(plan, scripted({"c": fail("power cut")}), workspace, run_key="resume-me")
    assert crashed.status == RunStatus.FAILED

    model = scripted({})
    resumed = run_plan(plan, model, workspace, run_key="resume-me")
    assert resumed.status == RunStatus.COMPLETED
    assert sorted(resumed.reused) == ["a", "b"]
    assert turns_of(model, "a") == [] and turns_of(model, "b") == []
    assert resumed.outcomes["a"].result == "result of a"
    assert len(turns_of(model, "c")) == 1


def test_condition_that_cannot_be_evaluated_fails_its_step_and_stops_a_fail_fast_run(workspace: Path) -> None:
    plan = Plan(tasks=[
        step("count", result="number"),
        step("odd", depends_on=["count"], condition="count.severity == 'high'"),  # a number has no fields
        step("after", depends_on=["odd"]),
    ])
    report = run_plan(plan, scripted({"count": succeed(3)}), workspace)
    assert report.outcomes["odd"].status == NodeStatus.FAILED
    assert "reads .severity of a float" in report.outcomes["odd"].error
    assert report.outcomes["after"].status == NodeStatus.SKIPPED
    assert report.status == RunStatus.FAILED and "odd failed" in report.stopped_by
    assert report.outcomes["count"].result == 3


def test_a_revision_that_would_redo_a_finished_step_is_refused_and_kept_as_failed(workspace: Path) -> None:
    plan = Plan(tasks=[step("a"), step("b", depends_on=["a"])])

    def replanner(request: ReplanRequest) -> Plan:
        return Plan(tasks=[step("a"), step("b2", depends_on=["a"])])  # "a" already finished

    model = scripted({"b": fail("no")})
    report = run_plan(plan, model, workspace, replanner=replanner, budgets=Budgets(max_replans=1))
    assert len(turns_of(model, "a")) == 1
    assert "replan failed" in report.revisions[0].error and "never redone" in report.revisions[0].error
    assert report.status == RunStatus.FAILED and "b failed" in report.stopped_by


def test_approval_step_without_an_approver_fails_clearly_and_stops(workspace: Path) -> None:
    plan = Plan(tasks=[step("a"), step("risky", depends_on=["a"], approval=True), step("after", depends_on=["risky"])])
    model = scripted({})
    report = run_plan(plan, model, workspace)
    assert report.outcomes["risky"].status == NodeStatus.FAILED
    assert "no approver" in report.outcomes["risky"].error
    assert turns_of(model, "risky") == []
    assert report.outcomes["after"].status == NodeStatus.SKIPPED and report.status == RunStatus.FAILED


class Person:
    """A scripted approver: answers per step, remembers what it was asked."""

    def __init__(self, **answers: ApprovalAnswer) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self.shown: dict[str, dict] = {}

    def __call__(self, sub: SubTask, inputs: dict) -> ApprovalAnswer:
        self.asked.append(sub.id)
        self.shown[sub.id] = inputs
        return self.answers[sub.id]


def test_the_person_sees_everything_upstream_but_the_step_gets_only_its_inputs(workspace: Path) -> None:
    from foreman.flows.approval import approval_request

    plan = Plan(tasks=[step("collect"), step("count", depends_on=["collect"]), step("unrelated"),
                       step("upload", depends_on=["count"], approval=True)])
    model = scripted({"collect": succeed("12 logs"), "count": succeed("3 errors"), "unrelated": succeed("x")})
    person = Person(upload=ApprovalAnswer(approved=True))
    report = run_plan(plan, model, workspace, approver=person)
    assert report.outcomes["upload"].status == NodeStatus.COMPLETED
    assert person.shown["upload"] == {"collect": "12 logs", "count": "3 errors"}  # the chain, not "unrelated"
    request = approval_request(plan.task("upload"), person.shown["upload"])
    assert '**collect**: "12 logs"' in request and '**count** (input of this step): "3 errors"' in request
    prompt = "\n".join(str(m.content) for m in turns_of(model, "upload")[0].messages)
    assert "3 errors" in prompt and "12 logs" not in prompt


def test_rejection_skips_the_branch_by_default_and_the_rest_goes_on(workspace: Path) -> None:
    plan = Plan(on_failure="fail_fast", tasks=[
        step("a"), step("publish", depends_on=["a"], approval=True), step("after", depends_on=["publish"]),
        step("other", depends_on=["a"]),
    ])
    report = run_plan(plan, scripted({}), workspace, approver=Person(publish=ApprovalAnswer(approved=False, comment="not yet")))
    statuses = {i: o.status for i, o in report.outcomes.items()}
    assert statuses == {"a": NodeStatus.COMPLETED, "publish": NodeStatus.REJECTED, "after": NodeStatus.SKIPPED,
                        "other": NodeStatus.COMPLETED}
    assert "not yet" in report.outcomes["publish"].reason and report.status == RunStatus.COMPLETED


def test_rejection_with_on_reject_fail_fails_the_run(workspace: Path) -> None:
    plan = Plan(tasks=[step("a"), step("publish", depends_on=["a"], approval=True, on_reject="fail")])
    model = scripted({})
    report = run_plan(plan, model, workspace, approver=Person(publish=ApprovalAnswer(approved=False)))
    assert report.outcomes["publish"].status == NodeStatus.FAILED and turns_of(model, "publish") == []
    assert report.status == RunStatus.FAILED and "rejected by a person" in report.stopped_by


def test_a_resume_without_an_answer_is_not_reported_as_a_persons_rejection(workspace: Path) -> None:
    plan = Plan(tasks=[step("publish", approval=True, on_reject="fail")])
    nobody = ApprovalAnswer(approved=False, answered=False)
    report = run_plan(plan, scripted({}), workspace, approver=Person(publish=nobody))
    assert report.outcomes["publish"].status == NodeStatus.FAILED
    assert "nobody answered" in report.stopped_by and "rejected by a person" not in report.stopped_by


def test_rejection_with_on_reject_replan_asks_the_planner_for_another_way(workspace: Path) -> None:
    plan = Plan(tasks=[step("a"), step("delete", depends_on=["a"], approval=True, on_reject="replan")])
    requests: list[ReplanRequest] = []

    def replanner(request: ReplanRequest) -> Plan:
        requests.append(request)
        return Plan(tasks=[step("archive", depends_on=["a"])])

    model = scripted({})
    report = run_plan(plan, model, workspace, replanner=replanner, budgets=Budgets(max_replans=1),
                      approver=Person(delete=ApprovalAnswer(approved=False, comment="archive them instead")))
    assert [r.failed for r in requests] == ["delete"] and "archive them instead" in requests[0].error
    assert report.outcomes["archive"].status == NodeStatus.COMPLETED and turns_of(model, "delete") == []
    assert report.status == RunStatus.COMPLETED


def test_the_approvers_answer_reaches_the_step(workspace: Path) -> None:
    plan = Plan(tasks=[step("tag", approval=True, ask="Which release tag?")])
    model = scripted({})
    run_plan(plan, model, workspace, approver=Person(tag=ApprovalAnswer(approved=True, value="v2.1")))
    prompt = "\n".join(str(m.content) for m in turns_of(model, "tag")[0].messages)
    assert "v2.1" in prompt


def test_mandatory_approval_tools_put_an_approval_point_before_steps_that_may_use_them(workspace: Path) -> None:
    plan = Plan(tasks=[step("look", agent="researcher", tools=["read_file"]), step("chat")])
    person = Person(look=ApprovalAnswer(approved=False))
    report = run_plan(plan, scripted({}), workspace, approver=person, approval_tools=["read_file"])
    assert person.asked == ["look"]  # "chat" (generalist) cannot reach read_file: not asked
    assert report.outcomes["look"].status == NodeStatus.REJECTED
    assert report.outcomes["chat"].status == NodeStatus.COMPLETED
