"""Plan validation and the condition language: pure Python, every error names what to fix."""

from __future__ import annotations

import pytest

from foreman.engine.conditions import ConditionError, parse_condition
from foreman.engine.plan import Plan, SubTask
from foreman.engine.policy import RunPolicy
from foreman.engine.validate import AgentInfo, PlanInvalid, PlanScope, validate_plan

SCOPE = PlanScope(
    agents={
        "researcher": AgentInfo(capabilities=["research"], tools=["read_file", "list_files"]),
        "coder": AgentInfo(capabilities=["code"], tools=["run_python"]),
        "writer": AgentInfo(capabilities=["write"], tools=["write_file"]),
    },
    policy=RunPolicy.build(allowed_tools=["read_file", "list_files", "run_python"], allow_code=True,
                           approval_tools=[], check_workspace=False),
    max_nodes=6,
    max_depth=3,
)


def node(id: str, **kw) -> SubTask:
    kw.setdefault("agent", "researcher")
    return SubTask(id=id, title=id, instructions=f"do {id}", **kw)


def errors(plan: Plan) -> list[str]:
    with pytest.raises(PlanInvalid) as info:
        validate_plan(plan, SCOPE)
    return [str(e) for e in info.value.errors]


def test_valid_diamond_gets_an_order_and_depth() -> None:
    plan = Plan(tasks=[node("a"), node("b", depends_on=["a"]), node("c", depends_on=["a"]), node("d", depends_on=["b", "c"])])
    valid = validate_plan(plan, SCOPE)
    assert valid.order[0] == "a" and valid.order[-1] == "d"
    assert valid.depth == 3


def test_cycle_is_refused_with_the_cycle_spelled_out() -> None:
    errs = errors(Plan(tasks=[node("a", depends_on=["c"]), node("b", depends_on=["a"]), node("c", depends_on=["b"])]))
    assert len(errs) == 1
    assert "dependency cycle" in errs[0] and "->" in errs[0]


def test_unknown_and_out_of_scope_tools_are_refused() -> None:
    errs = errors(Plan(tasks=[
        node("a", tools=["teleport"]),
        node("b", tools=["fetch_url"]),            # known, but not allowed in this flow
        node("c", tools=["run_python"]),           # allowed, but not the researcher's
    ]))
    assert errs[0].startswith("a.tools: unknown tool 'teleport'; known tools:")
    assert errs[1].startswith("b.tools: tool 'fetch_url' is not allowed in this flow")
    assert errs[2].startswith("c.tools: tool 'run_python' is outside the scope of researcher")


def test_every_error_is_reported_at_once() -> None:
    errs = errors(Plan(tasks=[
        node("a", agent="wizard"),
        node("a"),
        node("b", depends_on=["zzz", "b"]),
        node("c", capability="dance", agent=None),
        node("d", result="poem"),
    ]))
    text = "\n".join(errs)
    assert "unknown agent 'wizard'; known agents: coder, researcher, writer" in text
    assert "a.id: this id is used by more than one sub-task" in text
    assert "depends on unknown sub-task 'zzz'" in text
    assert "cannot depend on itself" in text
    assert "no agent has capability 'dance'" in text
    assert "unknown result type 'poem'" in text


def test_limits_on_size_and_depth() -> None:
    assert any("limit is 6" in e for e in errors(Plan(tasks=[node(f"n{i}") for i in range(7)])))
    chain = [node("a"), node("b", depends_on=["a"]), node("c", depends_on=["b"]), node("d", depends_on=["c"])]
    assert any("longest chain has 4" in e for e in errors(Plan(tasks=chain)))


def test_condition_must_parse_and_read_only_its_dependencies() -> None:
    errs = errors(Plan(tasks=[
        node("a"),
        node("b", depends_on=["a"], condition="a > 3 and"),
        node("c", condition="a == 1"),
        node("d", depends_on=["a"], condition="__import__('os').system('x')"),
    ]))
    assert any(e.startswith("b.condition") and "does not parse" in e for e in errs)
    assert any(e.startswith("c.condition") and "add it to depends_on" in e for e in errs)
    assert any(e.startswith("d.condition") and "calls something other than" in e for e in errs)


def test_empty_plan_is_refused() -> None:
    assert errors(Plan(tasks=[])) == ["tasks: the plan has no sub-tasks; add at least one"]


@pytest.mark.parametrize(
    ("source", "results", "expected"),
    [
        ("count > 3 and ok", {"count": 5, "ok": True}, True),
        ("count > 3 and ok", {"count": 2, "ok": True}, False),
        ("not ok or count == 0", {"count": 0, "ok": True}, True),
        ("contains(lower(summary), 'error')", {"summary": "An ERROR occurred"}, True),
        ("'x' in files", {"files": ["x", "y"]}, True),
        ("len(files) >= 2", {"files": ["x"]}, False),
        ("report.severity == 'high'", {"report": {"severity": "high"}}, True),
        ("1 < n <= 3", {"n": 3}, True),
        ("check == true", {"check": True}, True),
        ("total - spent > 10", {"total": 30, "spent": 15}, True),
    ],
)
def test_condition_language(source: str, results: dict, expected: bool) -> None:
    condition = parse_condition(source)
    assert condition.evaluate(results) is expected


@pytest.mark.parametrize(
    "source",
    ["__import__('os')", "summary.lower()", "[x for x in files]", "lambda: 1", "a.__class__", "open('f')", "x if y else z"],
)
def test_condition_language_refuses_anything_else(source: str) -> None:
    with pytest.raises(ConditionError):
        parse_condition(source)


def test_condition_on_a_wrong_type_says_so() -> None:
    with pytest.raises(ConditionError, match="failed on these results"):
        parse_condition("count > 3").evaluate({"count": "many"})


def test_an_oversized_plan_is_refused_by_its_size_alone_before_the_costly_checks() -> None:
    # 30,000 steps used to take minutes: the duplicate-id check ran first and was quadratic
    huge = Plan(tasks=[node(f"s{i % 7}", depends_on=[f"s{(i + 1) % 7}"]) for i in range(30_000)])
    errs = errors(huge)
    assert errs == ["tasks: 30000 sub-tasks; the limit is 6: merge some"]
