"""The memory store on its own: consolidation once, forgetting that leaves nothing in the file,
histories within their budget, a damaged file named, tools that need a user, `cf.Memory` per user."""

from __future__ import annotations

import pysqlite3.dbapi2 as sqlite3
import pytest
import sqlite_vec

from foreman.errors import StateFileError, ThreadRefused, ToolRefused
from foreman.settings import get_settings
from foreman.tools.audit import audit_log
from foreman.tools.catalog import ToolEnv, build_tool
from foreman.tools.memory.consolidate import consolidate, durable_facts
from foreman.tools.memory.history import build_history, count_tokens
from foreman.tools.memory.scope import MemoryScope
from foreman.tools.memory.service import memory_store, recall, remember
from foreman.tools.memory.store import MemoryStore

pytestmark = pytest.mark.usefixtures("foreman_home")


def say(store: MemoryStore, user: str, thread: str, *lines: str) -> None:
    for i, text in enumerate(lines):
        store.add_turn(user, thread, "user" if i % 2 == 0 else "assistant", text, count_tokens(text))


def test_durable_facts_are_a_users_statements_about_themselves_not_questions() -> None:
    assert durable_facts("Hi! My dog is called Rex. What is yours?") == ["The user's dog is called Rex."]
    assert durable_facts("I prefer metric units.") == ["The user prefers metric units."]
    assert durable_facts("Remember that the NAS is nas01.") == ["The NAS is nas01."]
    assert durable_facts("What is my dog called?") == [] and durable_facts("Tell me a joke") == []


def test_consolidation_writes_each_fact_once_with_its_source_turn() -> None:
    store = memory_store()
    thread = store.create_thread("priya").id
    say(store, "priya", thread, "My dog is called Rex.", "Nice.", "I live in Lisbon.", "Good.")
    first = consolidate("priya", thread)
    again = consolidate("priya", thread)  # nothing new since
    from_start = consolidate("priya", thread, from_start=True)  # every turn read again
    facts = store.facts("priya")
    assert [f.content for f in first.added] == ["The user's dog is called Rex.", "The user lives in Lisbon."]
    assert (again.turns_read, again.added) == (0, [])
    assert (from_start.turns_read, from_start.added, from_start.already) == (4, [], 2)
    assert [f.content for f in facts] == ["The user's dog is called Rex.", "The user lives in Lisbon."]
    turns = {t.id: t for t in store.turns("priya", thread)}
    assert [turns[f.source_turn].content for f in facts] == ["My dog is called Rex.", "I live in Lisbon."]
    assert {f.source_thread for f in facts} == {thread}


def test_recall_is_semantic_and_keyword_and_only_ever_the_users_own() -> None:
    remember("priya", "The user's dog is called Rex.")
    remember("priya", "The user's router is on VLAN 30.")
    remember("sam", "Sam's password is hunter2.")
    assert recall("priya", "what is my pet's name", 1)[0].content == "The user's dog is called Rex."
    assert recall("priya", "VLAN 30", 1)[0].content == "The user's router is on VLAN 30."
    assert all("hunter2" not in f.content for f in recall("priya", "Sam's password hunter2", 10))
    assert [f.content for f in recall("sam", "password")] == ["Sam's password is hunter2."]


def test_forget_user_leaves_nothing_of_them_in_the_sqlite_file() -> None:
    store = memory_store()
    thread = store.create_thread("samwise").id
    say(store, "samwise", thread, "My password is zebra-hunter-42.", "Noted.")
    consolidate("samwise", thread)
    remember("samwise", "Samwise keeps the spare key under the zebra-hunter-42 mat")
    remember("priya", "The user's dog is called Rex.")
    from foreman.flows.chat import forget_user  # noqa: F401  (the flow the UI runs wraps the same call)
    from foreman.tools.memory.service import forget_user as forget

    gone = forget("samwise")
    assert (gone.threads, gone.turns, gone.facts, gone.vectors) == (1, 2, 2, 2)
    path = get_settings().memory_db
    db = sqlite3.connect(str(path))
    db.enable_load_extension(True)
    sqlite_vec.load(db)
    assert db.execute("SELECT COUNT(*) FROM threads WHERE user = 'samwise'").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM turns WHERE user = 'samwise'").fetchone()[0] == 0
    assert db.execute("SELECT user FROM facts").fetchall() == [("priya",)]
    assert db.execute("SELECT COUNT(*) FROM fact_vec").fetchone()[0] == 1  # Priya's embedding only
    assert db.execute("SELECT COUNT(*) FROM fact_fts WHERE fact_fts MATCH 'zebra'").fetchone()[0] == 0
    db.close()
    raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file())
    assert b"zebra-hunter-42" not in raw and b"samwise" not in raw  # not in free pages, the WAL or the index
    assert recall("priya", "dog")[0].content == "The user's dog is called Rex."  # Priya's memory intact
    assert forget("samwise").facts == 0  # twice is harmless


def test_history_summarizes_older_turns_and_stays_within_budget() -> None:
    store = memory_store()
    thread = store.create_thread("priya").id
    budget = 300
    sizes = []
    for i in range(60):
        say(store, "priya", thread, f"Turn {i}: the nightly backup of nas01 finished with warnings about disk 3.")
        window = build_history(store, "priya", thread, budget)
        sizes.append(window.tokens)
    assert max(sizes) <= budget
    assert sizes[-1] >= 0.8 * budget  # past the budget it stays full, not empty: flat
    info = store.thread("priya", thread)
    assert info.summarized_upto > 0 and "Turn 0" not in window.lines()[0]
    assert "summarized further" in info.summary  # the oldest turns are counted, not silently dropped
    say(store, "priya", thread, "y " * 30_000)  # one turn larger than the model's context
    huge = build_history(store, "priya", thread, budget)
    assert huge.tokens <= budget and "tokens cut" in huge.turns[-1].content


def test_a_damaged_memory_file_is_named_and_left_in_place() -> None:
    path = get_settings().memory_db
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(StateFileError, match=str(path)) as caught:
        memory_store()
    assert "Move it aside" in str(caught.value)
    assert path.read_bytes() == b"\x00garbage" * 1000


def test_a_thread_belongs_to_one_user() -> None:
    store = memory_store()
    thread = store.create_thread("sam", "work").id
    for action in (lambda: store.turns("priya", thread), lambda: store.add_turn("priya", thread, "user", "x", 1),
                   lambda: store.delete_thread("priya", thread), lambda: store.create_thread("priya", "work"),
                   lambda: consolidate("priya", thread)):
        with pytest.raises(ThreadRefused):
            action()


def test_memory_tools_take_no_user_and_refuse_a_run_without_one() -> None:
    env = ToolEnv.from_settings()
    tool = build_tool("recall", env)
    assert set(tool.parameters["properties"]) == {"query", "k"}  # nothing to name a user with
    assert set(build_tool("remember", env).parameters["properties"]) == {"content"}
    with pytest.raises(ToolRefused, match="no user"):
        tool.fn(query="anything")
    assert audit_log().recent_runs(limit=1)[0]["refused"] == 1
    mine = env.model_copy(update={"memory": MemoryScope(user="priya")})
    build_tool("remember", mine).fn(content="The user drinks green tea.")
    assert build_tool("recall", mine).fn(query="tea")[0]["fact"] == "The user drinks green tea."
    with pytest.raises(ToolRefused, match="no memory #999"):
        build_tool("forget", mine).fn(memory_id=999)


def test_cf_memory_is_backed_by_the_store_and_kept_per_user() -> None:
    import controlflow as cf

    from foreman.tools.memory.cf_memory import as_user, use_foreman_memory

    use_foreman_memory()
    with as_user("priya"):
        prefs = cf.Memory(key="prefs", instructions="The user's preferences.")
        prefs.add("Likes answers in metric units")
        found = prefs.search("units")
    assert list(found.values()) == ["Likes answers in metric units"]
    with as_user("sam"):
        assert prefs.search("units") == {}
        prefs.add("Likes imperial units")
    assert [f.namespace for f in memory_store().facts("priya")] == ["cf:prefs"]
    assert recall("priya", "units") == []  # the tools' facts and a cf.Memory are separate namespaces
    with pytest.raises(ToolRefused, match="no user"):
        prefs.search("units")
    import sqlite3 as audit_sqlite

    with audit_sqlite.connect(get_settings().audit_db) as db:
        rows = db.execute("SELECT tool, outcome FROM tool_calls WHERE tool LIKE 'cf.Memory%' ORDER BY id").fetchall()
    assert rows == [("cf.Memory:prefs:add", "ok"), ("cf.Memory:prefs:search", "ok"), ("cf.Memory:prefs:search", "ok"),
                    ("cf.Memory:prefs:add", "ok"), ("cf.Memory:prefs:search", "refused")]
