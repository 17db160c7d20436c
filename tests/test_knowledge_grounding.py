"""Grounding before any model call: passages for an objective, in each sub-task's prompt, and the
one-call fast path; a scripted model records what it was shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from foreman.agents.models import use_model
from foreman.agents.registry import registry
from foreman.agents.scripted import ScriptedChatModel, ScriptedReply, Turn, succeed
from foreman.engine.answer import answer_from_passages, fast_path_plan
from foreman.engine.cf_runner import ControlFlowRunner, build_scope
from foreman.engine.evidence import evidence
from foreman.engine.executor import Budgets, Engine, RunStatus
from foreman.engine.grounded_runner import GroundedRunner
from foreman.engine.grounding import ANSWER_RULE, Grounding, format_passages, ground
from foreman.engine.plan import Plan, SubTask
from foreman.engine.policy import RunPolicy, tool_env
from foreman.engine.routing import route
from foreman.engine.store import run_store
from foreman.engine.validate import validate_plan
from foreman.settings import get_settings
from foreman.tools.knowledge.search import Passage
from foreman.tools.tables.store import sync_tables

pytestmark = pytest.mark.usefixtures("foreman_home")

RECOMMENDATION = "Recommendation: move the log upload to 03:00 and cap transcoding at 2 threads."


def prompt_text(turn: Turn) -> str:
    return "\n".join(str(m.content) for m in turn.messages)


def test_ground_finds_the_passage_and_reindexes_only_what_changed(workspace: Path) -> None:
    policy = RunPolicy.build(workspace=workspace)
    first = ground("What does the Q3 report recommend?", policy)

    assert first.indexed is not None and len(first.indexed.added) >= 30
    report = next(p for p in first.passages if p.path == "report.txt")
    assert report.line_start <= 8 <= report.line_end and RECOMMENDATION in report.text
    context = format_passages(first)
    assert f"] {report.source}" in context and RECOMMENDATION in context and ANSWER_RULE in context

    (workspace / "todo.txt").write_text("1. Buy a new UPS battery.\n")
    again = ground("What does the Q3 report recommend?", policy)
    assert again.indexed is not None
    assert again.indexed.changed == ["todo.txt"] and again.indexed.chunks_embedded == 1
    assert again.indexed.unchanged == len(first.indexed.added) - 1
    assert again.sources and again.seconds < first.seconds


def test_a_run_without_knowledge_bases_is_not_grounded(workspace: Path) -> None:
    grounding = ground("What does the Q3 report recommend?", RunPolicy.build(workspace=workspace, knowledge_bases=[]))
    assert (grounding.passages, grounding.indexed, format_passages(grounding)) == ([], None, "")


@pytest.mark.usefixtures("prefect_server")
def test_the_grounding_context_reaches_the_sub_task(workspace: Path) -> None:
    settings = get_settings()
    policy = RunPolicy.build(workspace=workspace, allowed_tools=["read_file", "notify_user"])
    objective = "What does the Q3 report recommend?"
    ground(objective, policy)  # the run indexes its workspace once, before planning
    scope = build_scope(registry, policy)
    runner = GroundedRunner(ControlFlowRunner(tool_env(policy), registry, settings, policy=policy), policy, objective)
    engine = Engine(runner, scope, run_store(), Budgets())
    plan = Plan(objective=objective, tasks=[
        SubTask(id="answer", title="Answer from the report", agent="generalist", retries=0,
                instructions="Say what the Q3 report recommends."),
    ])
    model = ScriptedChatModel(replies=[succeed("Move the log upload to 03:00 (report.txt:8).")])

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def go():
        return engine.run(validate_plan(plan, scope), "grounded-1")

    with use_model(model):
        report = go()

    assert report.status == RunStatus.COMPLETED
    shown = prompt_text(model.turns[0])
    assert RECOMMENDATION in shown and "report.txt:" in shown and ANSWER_RULE in shown
    assert any(s.startswith("report.txt:") for s in runner.sources["answer"])
    assert plan.tasks[0].instructions == "Say what the Q3 report recommends."  # the plan itself is unchanged


def test_the_fast_path_answers_in_one_call_and_cites_the_passage_it_used(workspace: Path) -> None:
    question = "What does the Q3 report recommend?"
    grounding = ground(question, RunPolicy.build(workspace=workspace))
    assert route(question, grounding).kind == "lookup"

    def respond(turn: Turn) -> ScriptedReply:
        number = re.search(r"\[(\d+)\] report\.txt:", prompt_text(turn)).group(1)
        return ScriptedReply(content=f"Move the log upload to 03:00 and cap transcoding at 2 threads [{number}].")

    model = ScriptedChatModel(responder=respond)
    answer = answer_from_passages(question, grounding, model)

    assert len(model.turns) == 1 and model.turns[0].tool_names == []  # one plain call, no tools
    assert RECOMMENDATION in prompt_text(model.turns[0])
    assert "03:00" in answer.answer and answer.grounded
    assert len(answer.sources) == 1 and answer.sources[0].startswith("report.txt:")
    assert any(e.startswith("report.txt:8: Recommendation") for e in answer.evidence)
    assert "From the notes:\n" in answer.text and "\n- report.txt:8: Recommendation" in answer.text  # as shown
    one_step = fast_path_plan(question, route(question, grounding))
    policy = RunPolicy.build(workspace=workspace)
    assert validate_plan(one_step, build_scope(registry, policy)).order == ["answer"]


def passage(path: str = "a.md", text: str = "x") -> Passage:
    return Passage(base="b", path=path, line_start=1, line_end=1, text=text, score=1.0, keyword_rank=1)


DEMO = Path(__file__).resolve().parent.parent / "demo" / "workspace"


@pytest.mark.parametrize(("objective", "kind"), [
    ("What does the Q3 report recommend?", "lookup"),
    ("Which port does WireGuard listen on", "lookup"),
    ("How many hosts have more than 16 GB of RAM?", "lookup"),  # no table found: the passages are all there is
    ("Write the Q3 summary to summary.md", "plan"),
    ("Read the report and then notify Priya", "plan"),
    ("The NAS", "plan"),
])
def test_without_tables_a_question_is_looked_up_and_the_rest_is_planned(objective: str, kind: str) -> None:
    decided = route(objective, Grounding(query=objective, passages=[passage()]))
    assert decided.kind == kind, decided.reason
    assert route(objective, Grounding(query=objective)).kind == "plan"  # nothing found: the steps look themselves


@pytest.mark.parametrize(("objective", "kind", "tables", "write"), [
    ("How many hosts have more than 16 GB of RAM?", "query", ["hosts"], None),
    ("What is the total RAM of the hosts in the basement rack?", "query", ["hosts"], None),
    ("Which services listen on a port above 8000?", "query", ["services"], None),
    ("Write big-hosts.md listing every host with more than 16 GB of RAM", "query", ["hosts"], "big-hosts.md"),
    ("Draft the note to Priya in big-hosts.txt: every host over 16 GB of RAM", "query", ["hosts"], "big-hosts.txt"),
    ("What does the Q3 report recommend?", "lookup", [], None),  # nothing computed: a lookup, tables or not
    ("Why did the nightly backup fail in August?", "lookup", [], None),
])
def test_with_tables_a_computed_question_or_a_file_from_the_data_is_one_query(
        objective: str, kind: str, tables: list[str], write: str | None) -> None:
    catalog = sync_tables(DEMO)
    decided = route(objective, Grounding(query=objective, passages=[passage()], tables=catalog))
    assert decided.kind == kind, decided.reason
    assert [t.name for t in decided.tables][:1] == tables[:1], decided.tables
    assert (decided.write.path if decided.write else None) == write


@pytest.mark.parametrize(("question", "line", "kind"), [  # the lines sit in a file named like the real one
    ("How many reallocated sectors does disk sdc have?",
     "- Disk `sdc` (serial WD-CA1XYZ77) shows 8 reallocated sectors since the Nov 15 SMART", "lookup"),
    ("How many daily, weekly and monthly restic snapshots are kept?",
     "keep 7 daily, 4 weekly and 12 monthly snapshots.", "lookup"),
    ("How many Zigbee devices does Home Assistant manage?",
     "- Zigbee: Sonoff Zigbee 3.0 USB dongle passed through to the VM; 23 devices (12 lights,", "lookup"),
    # a number near the noun, but about something else: counting the table's rows is still needed
    ("How many VMs run on pve2?", "A 32 GB VM takes about 20 minutes over the 1 Gbit link.", "query"),
    ("How many hosts in the inventory are in the basement rack?",
     "pve1,Proxmox node (main VMs),192.168.10.11,Proxmox VE 8.2,AMD Ryzen 7 5700G,64,2 TB NVMe,basement rack", "query"),
])
def test_a_count_the_notes_state_is_looked_up_and_one_that_needs_counting_is_a_query(
        question: str, line: str, kind: str) -> None:
    grounding = Grounding(query=question, passages=[passage("notes/home-assistant.md", f"intro\n{line}")],
                          tables=sync_tables(DEMO))
    decided = route(question, grounding)
    assert decided.kind == kind, decided.reason
    if kind == "lookup":
        assert "notes/home-assistant.md:2" in decided.reason  # says which line states it


@pytest.mark.parametrize(("question", "line", "phrase"), [
    ("How many Zigbee devices does Home Assistant manage?",
     "- Zigbee: Sonoff Zigbee 3.0 USB dongle passed through to the VM; 23 devices (12 lights,", "23 devices"),
    ("How many daily, weekly and monthly restic snapshots are kept?",
     "keep 7 daily, 4 weekly and 12 monthly snapshots.", "7 daily, 4 weekly and 12 monthly"),
])
def test_the_stated_count_is_put_before_the_lines_so_the_model_does_not_take_another_number(
        question: str, line: str, phrase: str) -> None:
    grounding = Grounding(query=question, passages=[passage("notes/home-assistant.md", f"intro\n{line}")])
    model = ScriptedChatModel(responder=lambda turn: ScriptedReply(content=f"{phrase}."))
    answered = answer_from_passages(question, grounding, model, style="adaptive")
    shown = prompt_text(model.turns[0])
    assert f"[0] notes/home-assistant.md:2 states {phrase}\n" in shown  # first, before the lines
    assert answered.evidence[0].startswith("notes/home-assistant.md:2: ")  # the line itself, as support
    plain = Grounding(query="Who manages the Zigbee devices?", passages=grounding.passages)
    answer_from_passages("Who manages the Zigbee devices?", plain, model, style="adaptive")
    assert "[0]" not in prompt_text(model.turns[-1])  # not a count question: no note


def test_a_refusal_of_the_lines_is_asked_again_without_the_rule_and_checked_against_the_notes() -> None:
    question = "What is the DHCP range of the guest VLAN?"
    block = "vlans:\n  - id: 30\n    name: guest\n    dhcp: 192.168.30.10-192.168.30.200"
    grounding = Grounding(query=question, passages=[passage("network/vlans.yaml", block)])

    def respond(turn: Turn) -> ScriptedReply:  # a small model that refuses under the rule, and needs the YAML
        text = prompt_text(turn)
        if "The notes do not say." in text:
            return ScriptedReply(content="The notes do not say.")
        if "name: guest\n" in text:
            return ScriptedReply(content="From 192.168.30.10 to 192.168.30.200.")
        return ScriptedReply(content="It is 192.168.99.1-192.168.99.9.")  # not in the notes: not taken

    model = ScriptedChatModel(responder=respond)
    answered = answer_from_passages(question, grounding, model, style="adaptive")
    assert answered.answer == "From 192.168.30.10 to 192.168.30.200." and answered.calls == 3

    inventing = ScriptedChatModel(responder=lambda turn: ScriptedReply(
        content="The notes do not say." if "The notes do not say." in prompt_text(turn) else "It is 10.0.0.1-10.0.0.9."))
    kept = answer_from_passages(question, grounding, inventing, style="adaptive")
    assert kept.answer == "The notes do not say." and kept.calls == 3  # nothing the notes support: the refusal

    sure = ScriptedChatModel(responder=lambda turn: ScriptedReply(content="192.168.30.10-192.168.30.200 [1]."))
    assert answer_from_passages(question, grounding, sure, style="adaptive").calls == 1
    assert len(sure.turns) == 1  # an answer in the first call costs no second one


def test_a_csv_row_is_shown_to_the_model_as_named_columns() -> None:
    heading = "columns: hostname, role, ram_gb, location"
    rows = "hostname,role,ram_gb,location\nfw01,router,8,hallway\npve1,Proxmox node (main VMs),64,basement rack"
    table = Passage(base="b", path="inventory/hosts.csv", line_start=1, line_end=3, text=rows, score=1.0,
                    keyword_rank=1, heading=heading)
    lines = evidence("How much RAM does pve1 have?", [table], 1)
    assert lines == ["inventory/hosts.csv:3: hostname: pve1, role: Proxmox node (main VMs), ram_gb: 64, "
                     "location: basement rack"]


@pytest.mark.parametrize(("answer", "is_refusal"), [
    ("The notes do not say.", True),
    ("The DHCP range of the guest VLAN is not specified in the notes.", True),
    ("The DHCP range of the guest VLAN is not explicitly stated in the notes.", True),
    ("Logs older than 30 days are archived, not deleted.", False),
    ("The old printer does not have 5 GHz, so it joins the 2.4 GHz network.", False),
])
def test_a_refusal_in_the_models_own_words_is_recognised(answer: str, is_refusal: bool) -> None:
    from foreman.engine.answer import refused

    assert refused(answer) is is_refusal


def test_a_yaml_list_item_is_one_line_of_evidence_with_all_its_keys() -> None:
    block = ("# The home network: VLANs, subnets and DHCP.\nvlans:\n  - id: 20\n    name: iot\n"
             "    subnet: 192.168.20.0/24\n  - id: 30\n    name: guest\n    subnet: 192.168.30.0/24")
    yaml_passage = Passage(base="b", path="inventory/network.yaml", line_start=1, line_end=8, text=block,
                           score=1.0, keyword_rank=1)
    prose = passage("notes/vpn.md", "Tunnel subnet 10.8.0.0/24; peers reach the LAN but not the IoT VLAN.")
    lines = evidence("Which subnet does the IoT VLAN use?", [prose, yaml_passage], 2)
    assert "inventory/network.yaml:3: id: 20, name: iot, subnet: 192.168.20.0/24" in lines


def test_a_line_that_opens_a_list_is_shown_with_the_list() -> None:
    text = ("# Power outage\n\nStart in this order, waiting for each to answer ping:\n\n"
            "1. fw01 (router), then pi01 (DNS).\n2. nas01: wait for the pool.\n3. pve1, then pve2.\n\nThen check Grafana.")
    runbook = passage("runbooks/power-outage.md", text)
    best = evidence("In which order are hosts started after a power outage?", [runbook], 1)[0]
    assert best.endswith("ping: 1. fw01 (router), then pi01 (DNS). 2. nas01: wait for the pool. 3. pve1, then pve2.")
