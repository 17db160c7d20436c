"""`foreman chat` and `foreman memory`: a conversation in the terminal, and the controls over what is kept."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from foreman.agents.models import use_model
from foreman.agents.scripted import ScriptedChatModel, Turn, succeed
from foreman.cli import app
from foreman.tools.audit import audit_log
from foreman.tools.memory.history import count_tokens
from foreman.tools.memory.service import memory_store, remember

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("foreman_home")


def model() -> ScriptedChatModel:
    def respond(turn: Turn):
        text = "\n".join(str(m.content) for m in turn.messages)
        return succeed("Your dog is Rex." if "My dog is called Rex" in text else "Tell me more.")

    return ScriptedChatModel(responder=respond)


@pytest.mark.usefixtures("prefect_server")
def test_chat_keeps_one_thread_until_ctrl_d_then_consolidates() -> None:
    with use_model(model()):
        out = runner.invoke(app, ["chat", "--user", "priya"], input="My dog is called Rex.\n\nWhat is my dog?\n",
                            terminal_width=200)
    assert out.exit_code == 0, out.output
    threads = memory_store().threads("priya")
    assert len(threads) == 1 and threads[0].turns == 4  # two turns of two messages, the empty line skipped
    assert out.output.count("generalist: ") == 2 and "generalist: Your dog is Rex." in out.output
    assert f"--thread {threads[0].id}" in out.output
    assert "1 new fact(s) moved to long-term memory" in out.output
    assert [f.content for f in memory_store().facts("priya")] == ["The user's dog is called Rex."]


def test_chat_refuses_another_users_thread_before_any_run() -> None:
    sams = memory_store().create_thread("sam").id
    out = runner.invoke(app, ["chat", "--user", "priya", "--thread", sams], input="hello\n", terminal_width=200)
    assert out.exit_code == 2 and "belongs to another user" in out.output
    assert memory_store().thread("sam", sams).turns == 0
    refused = [r for r in audit_log().recent_runs(limit=5) if r["refused"]]
    assert refused, "the refusal is in the audit log"
    unknown = runner.invoke(app, ["chat", "--user", "priya", "--thread", "nope"], input="hello\n",
                            terminal_width=200)
    assert unknown.exit_code == 2 and "leave --thread out to start a new thread" in unknown.output


def test_memory_commands_show_and_delete_with_counts() -> None:
    store = memory_store()
    thread = store.create_thread("priya", "home").id
    for role, text in (("user", "My dog is called Rex."), ("assistant", "Nice.")):
        store.add_turn("priya", thread, role, text, count_tokens(text))
    fact, _ = remember("priya", "The user's dog is called Rex.", source_thread=thread)
    remember("sam", "Sam's password is hunter2.")

    listed = runner.invoke(app, ["memory", "list", "--user", "priya"], terminal_width=200)
    assert listed.exit_code == 0 and "home" in listed.output and "1 thread(s), 1 fact(s)" in listed.output
    every = runner.invoke(app, ["memory", "list", "--all"], terminal_width=200)
    assert "priya" in every.output and "sam" in every.output
    shown = runner.invoke(app, ["memory", "show", "home", "--user", "priya"], terminal_width=200)
    assert "1 user: My dog is called Rex." in shown.output
    facts = runner.invoke(app, ["memory", "show", "--user", "priya"], terminal_width=200)
    assert "The user's dog is called Rex." in facts.output and "hunter2" not in facts.output
    refused = runner.invoke(app, ["memory", "show", "home", "--user", "sam"], terminal_width=200)
    assert refused.exit_code == 2 and "belongs to another user" in refused.output

    not_his = runner.invoke(app, ["memory", "forget", str(fact.id), "--user", "sam"], terminal_width=200)
    assert not_his.exit_code == 2 and f"sam has no fact #{fact.id}" in not_his.output
    assert [f.id for f in store.facts("priya")] == [fact.id]  # Priya's fact survived Sam's attempt
    forgot = runner.invoke(app, ["memory", "forget", str(fact.id), "--user", "priya"], terminal_width=200)
    assert forgot.exit_code == 0 and "0 thread(s), 0 turn(s), 1 fact(s), 1 embedding(s)" in forgot.output
    everything = runner.invoke(app, ["memory", "forget-user", "--user", "priya", "--yes"], terminal_width=200)
    assert everything.exit_code == 0
    assert "forgot priya: deleted 1 thread(s), 2 turn(s), 0 fact(s), 0 embedding(s)" in everything.output
    assert store.threads("priya") == [] and [f.content for f in store.facts("sam")] == ["Sam's password is hunter2."]
