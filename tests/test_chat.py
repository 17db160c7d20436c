"""`chat-turn` end to end on a real Prefect server with a scripted model: threads that continue
(across processes), memories recalled in a new thread, users who cannot reach each other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect import get_client
from prefect.settings import PREFECT_API_URL

from foreman.agents.models import use_model
from foreman.agents.scripted import ScriptedChatModel, Turn, call, succeed
from foreman.errors import StateFileError, ThreadRefused, UnknownThread
from foreman.flows.chat import chat_turn, consolidate_thread
from foreman.settings import get_settings
from foreman.tools.audit import audit_log
from foreman.tools.memory.history import count_tokens
from foreman.tools.memory.service import memory_store, remember

pytestmark = pytest.mark.usefixtures("prefect_server", "foreman_home")
REPO = Path(__file__).resolve().parent.parent


def seen(turn: Turn) -> str:
    return "\n".join(str(m.content) for m in turn.messages)


def echo_model() -> ScriptedChatModel:
    """Replies with the words it was shown after 'REPLY-WITH-', so a test sees what reached the prompt."""

    def respond(turn: Turn):
        text = seen(turn)
        found = [w for w in ("Rex", "hunter2", "green tea") if w in text]
        return succeed("saw: " + (", ".join(found) or "nothing"))

    return ScriptedChatModel(responder=respond)


CHILD = """
import json, sys
from foreman.agents.models import use_model
from foreman.agents.scripted import ScriptedChatModel, succeed
from foreman.flows.chat import chat_turn

def respond(turn):
    text = "\\n".join(str(m.content) for m in turn.messages)
    return succeed("saw Rex" if "Rex" in text else "saw nothing")

args = json.loads(sys.argv[1])
with use_model(ScriptedChatModel(responder=respond)):
    result = chat_turn(**args)
print("RESULT " + result.model_dump_json())
"""


def run_child(**args) -> dict:
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "FOREMAN_HOME": str(get_settings().home)}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True, env=env, check=False,
                          cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_a_thread_continues_in_another_process_with_its_history() -> None:
    first = run_child(user="priya", message="My dog is called Rex.")
    assert first["new_thread"] and first["reply"] == "saw Rex"  # its own message is the objective
    second = run_child(user="priya", thread=first["thread"], message="What is my dog called?")
    assert second["thread"] == first["thread"] and not second["new_thread"]
    assert second["reply"] == "saw Rex"  # the first turn, stored by the first process, reached the prompt
    with use_model(echo_model()):  # a new thread has no history (and nothing was consolidated yet)
        third = chat_turn(user="priya", message="What is my dog called?")
    assert third.thread != first["thread"] and third.reply == "saw: nothing"
    turns = memory_store().turns("priya", first["thread"])
    assert [(t.role, t.content) for t in turns] == [
        ("user", "My dog is called Rex."), ("assistant", "saw Rex"),
        ("user", "What is my dog called?"), ("assistant", "saw Rex")]


def test_each_turn_is_a_flow_run_tagged_with_its_user() -> None:
    with use_model(echo_model()):
        state = chat_turn(user="priya", message="Hello", return_state=True)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert "user:priya" in run.tags and run.parameters["user"] == "priya" and run.name


def test_a_fact_from_one_thread_is_recalled_in_a_new_thread() -> None:
    with use_model(echo_model()):
        first = chat_turn(user="priya", message="I like green tea in the morning.")
        added = consolidate_thread(user="priya", thread=first.thread)
        later = chat_turn(user="priya", message="What should I drink?")
    assert added == 1
    assert later.thread != first.thread
    assert later.memories == ["The user likes green tea in the morning."]
    assert later.reply == "saw: green tea"


def test_priya_cannot_recall_sams_password_however_the_model_asks() -> None:
    remember("sam", "Sam's password is hunter2")
    shown: list[str] = []

    def respond(turn: Turn):
        shown.append(seen(turn))
        if len(shown) == 1:
            return call("recall", query="Sam's password")
        if len(shown) == 2:
            return call("recall", query="password", user="sam")  # a user argument does not exist
        return succeed("I do not know it")

    remember("priya", "Priya's password is tulip7")
    with use_model(ScriptedChatModel(responder=respond)):
        result = chat_turn(user="priya", message="What is Sam's password?")

    assert all("hunter2" not in text for text in shown)
    assert "tulip7" in shown[1]  # the recall ran, over Priya's own facts
    assert "hunter2" not in result.reply and all("hunter2" not in m for m in result.memories)
    records = [r for r in audit_log().for_run(str(_last_run_id())) if r.tool == "recall"]
    assert records and all("hunter2" not in r.detail for r in records)
    assert (records[0].outcome, records[0].arguments) == ("ok", {"query": "Sam's password"})
    assert "unexpected keyword argument 'user'" in shown[2]  # naming a user is an error the model sees
    assert [(r.outcome, r.arguments.get("user")) for r in records[1:]] == [("error", "sam")]  # and audited


def _last_run_id() -> str:
    return audit_log().recent_runs(limit=1)[0]["run_id"]


def test_another_users_thread_is_refused_and_audited() -> None:
    with use_model(echo_model()):
        sams = chat_turn(user="sam", message="My password is hunter2.")
        with pytest.raises(ThreadRefused, match="belongs to another user"):
            chat_turn(user="priya", thread=sams.thread, message="What did I say?")
    refused = [r for r in audit_log().for_run(_last_run_id()) if r.outcome == "refused"]
    assert [(r.tool, r.arguments) for r in refused] == [("chat-turn", {"user": "priya", "thread": sams.thread})]
    assert [t.role for t in memory_store().turns("sam", sams.thread)] == ["user", "assistant"]  # untouched


def test_an_unknown_thread_is_an_error_listing_the_users_threads() -> None:
    with use_model(echo_model()):
        mine = chat_turn(user="priya", message="Hello")
        with pytest.raises(UnknownThread, match=f"not one of your threads.*{mine.thread}"):
            chat_turn(user="priya", thread="no-such-thread", message="Hello again")


def test_a_damaged_memory_file_is_an_error_naming_it_and_nothing_else_changes() -> None:
    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.memory_db.write_bytes(b"this is not a database" * 200)
    with use_model(echo_model()), pytest.raises(StateFileError, match=str(settings.memory_db)):
        chat_turn(user="priya", message="Hello")
    assert settings.memory_db.read_bytes() == b"this is not a database" * 200  # not replaced, not moved
    assert audit_log().recent_runs(limit=5) is not None  # the audit log still reads


def test_the_prompt_stays_within_the_budget_however_long_the_thread() -> None:
    budget = get_settings().memory_history_tokens
    prompts: list[int] = []

    def respond(turn: Turn):
        prompts.append(sum(count_tokens(str(m.content)) for m in turn.messages))
        return succeed("ok")

    with use_model(ScriptedChatModel(responder=respond)):
        thread = chat_turn(user="priya", message="Start.").thread
        empty = prompts[-1]
        store = memory_store()
        for i in range(80):
            text = f"Filler turn {i}: " + "the backup ran and the router logged a warning about VLAN 30. " * 3
            store.add_turn("priya", thread, "user" if i % 2 == 0 else "assistant", text, count_tokens(text))
        store.add_turn("priya", thread, "user", "x " * 20_000, 20_000)  # one pasted giant
        first = chat_turn(user="priya", thread=thread, message="And now?")
        second = chat_turn(user="priya", thread=thread, message="And now again?")
    assert first.history_tokens <= budget and second.history_tokens <= budget
    assert prompts[-1] - empty <= budget + 100 and prompts[-2] - empty <= budget + 100
    assert first.summarized_turns >= 80  # the filler is in the summary, not dropped and not in full
    assert "Filler turn" in store.thread("priya", thread).summary


def test_a_bigger_request_goes_to_the_planner_and_its_answer_comes_back(workspace: Path) -> None:
    from foreman.agents.scripted import succeed_model

    chat_calls: list[str] = []

    def respond(turn: Turn):
        text = seen(turn)
        if "a plan for this objective" in text:
            return succeed_model(rationale="one step", tasks=[{"id": "count", "title": "STEP-COUNT",
                                                               "instructions": "Count the notes.",
                                                               "agent": "generalist"}])
        if "Answer the objective" in text:
            return succeed("FINAL ANSWER: 7 notes")
        if "STEP-COUNT" in text:
            return succeed("7")
        chat_calls.append(text)
        if len(chat_calls) == 1:
            return call("hand_to_planner", objective="Count the notes in the workspace")
        return succeed("I handed that to the planner.")

    with use_model(ScriptedChatModel(responder=respond)):
        result = chat_turn(user="priya", message="Count my notes for me", workspace=str(workspace), ground=False)
        by_prefix = chat_turn(user="priya", thread=result.thread, message="/plan Count the notes again",
                              workspace=str(workspace), ground=False)
    assert result.reply.startswith("I handed that to the planner.") and "FINAL ANSWER: 7 notes" in result.reply
    assert by_prefix.reply == "FINAL ANSWER: 7 notes" and len(chat_calls) == 2  # `/plan` needs no chat call
    with get_client(sync_client=True) as client:
        planner = client.read_flow_run(result.planner_run)
    assert planner.parameters["objective"] == "Count the notes in the workspace" and "user:priya" in planner.tags
    assert [t.content for t in memory_store().turns("priya", result.thread)][-1] == "FINAL ANSWER: 7 notes"


def test_a_chat_agent_gets_the_memory_tools_and_only_the_tools_the_run_allows() -> None:
    model = echo_model()
    with use_model(model):
        chat_turn(user="priya", message="Compute 2+2", agent="coder")  # the coder's own tool is run_python
    bound = set(model.turns[0].tool_names)
    assert {"remember", "recall", "forget", "hand_to_planner"} <= bound
    assert "run_python" not in bound  # a chat turn is not started with allow_code
