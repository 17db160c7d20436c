"""Foreman's own stores behave the same on SQLite and on PostgreSQL (FOREMAN_DATABASE_URL).

One contract, run against each backend: the SQLite files under FOREMAN_HOME (the default),
Debian's PostgreSQL (vectors in the portable bytea column) and, for the stores with vectors,
a PostgreSQL with pgvector (the server bundled in the `pgserver` wheel; Debian's 15 has no
pgvector package here). The servers are real, started once per session by `foreman.pg`.
Writes that must survive across worker processes are made from real subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from foreman.db import PgDatabase
from foreman.engine.records import NodeStatus
from foreman.engine.store import PgRunStore, RunStore, run_store
from foreman.errors import ConfigurationError, PostgresUnavailable, ThreadRefused
from foreman.pg import TempPostgres, free_port, pgvector_bin_dir
from foreman.settings import get_settings, reset_settings
from foreman.tools.audit import AuditRecord, PgAuditLog, audit_log
from foreman.tools.knowledge.embedding import default_embedder
from foreman.tools.knowledge.ingest import ingest
from foreman.tools.knowledge.search import search
from foreman.tools.knowledge.store import PgKnowledgeStore, open_knowledge
from foreman.tools.memory.store import PgMemoryStore, open_memory

pytestmark = pytest.mark.usefixtures("foreman_home")


@pytest.fixture(scope="session")
def debian_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TempPostgres]:
    server = TempPostgres(tmp_path_factory.mktemp("contract-pg"))
    try:
        yield server.start()
    finally:
        server.remove()


@pytest.fixture(scope="session")
def pgvector_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TempPostgres | None]:
    bin_dir = pgvector_bin_dir()
    if bin_dir is None:
        yield None
        return
    server = TempPostgres(tmp_path_factory.mktemp("contract-pgvector"), bin_dir=bin_dir)
    try:
        yield server.start()
    finally:
        server.remove()


def _use(server: TempPostgres, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh database on `server`, set as FOREMAN_DATABASE_URL for this test."""
    name = f"t{uuid.uuid4().hex[:12]}"
    server.create_database(name)
    url = server.dsn(name)
    monkeypatch.setenv("FOREMAN_DATABASE_URL", url)
    reset_settings()
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The run store and the audit log: SQLite files, or one PostgreSQL database."""
    monkeypatch.delenv("FOREMAN_DATABASE_URL", raising=False)
    reset_settings()
    if request.param == "postgres":
        _use(request.getfixturevalue("debian_pg"), monkeypatch)
    return request.param


@pytest.fixture(params=["sqlite", "postgres", "pgvector"])
def vector_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Memory and knowledge: SQLite (sqlite-vec), PostgreSQL with portable vectors, PostgreSQL with pgvector."""
    monkeypatch.delenv("FOREMAN_DATABASE_URL", raising=False)
    reset_settings()
    if request.param == "postgres":
        _use(request.getfixturevalue("debian_pg"), monkeypatch)
    elif request.param == "pgvector":
        server = request.getfixturevalue("pgvector_pg")
        if server is None:
            pytest.skip("no PostgreSQL with pgvector here: `pip install --no-deps pgserver==0.1.4` provides one")
        _use(server, monkeypatch)
    return request.param


def in_subprocess(code: str) -> subprocess.Popen[str]:
    """Run `code` in a new Python process with this test's environment (FOREMAN_HOME, the URL)."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(*processes: subprocess.Popen[str]) -> None:
    for process in processes:
        _, err = process.communicate(timeout=180)
        assert process.returncode == 0, err[-2000:]


# --- the setting ---------------------------------------------------------------------


def test_the_setting_picks_the_backend_and_a_bad_url_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FOREMAN_DATABASE_URL", raising=False)
    reset_settings()
    assert type(run_store()) is RunStore and run_store().path == get_settings().home / "runs.sqlite3"
    monkeypatch.setenv("FOREMAN_DATABASE_URL", "mysql://me:secret@db/foreman")
    reset_settings()
    with pytest.raises(ConfigurationError) as bad:
        run_store()
    assert "FOREMAN_DATABASE_URL" in str(bad.value) and "postgresql://" in str(bad.value)
    assert "secret" not in str(bad.value)
    monkeypatch.setenv("FOREMAN_DATABASE_URL", f"postgresql://me:secret@127.0.0.1:{free_port()}/foreman")
    reset_settings()
    started = time.monotonic()
    with pytest.raises(PostgresUnavailable) as down:  # nothing listens on that port
        audit_log()
    assert isinstance(down.value, ConfigurationError)
    assert "cannot reach PostgreSQL" in str(down.value) and "FOREMAN_DATABASE_URL" in str(down.value)
    assert "secret" not in str(down.value) and time.monotonic() - started < 15


def test_one_url_serves_prefect_and_foreman(debian_pg: TempPostgres, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SQLAlchemy form Prefect's setting takes (`postgresql+asyncpg://`) is accepted as it is."""
    monkeypatch.setenv("FOREMAN_DATABASE_URL", debian_pg.create_database("shared"))
    reset_settings()
    assert get_settings().database_url.startswith("postgresql+asyncpg://")
    store = run_store()
    assert isinstance(store, PgRunStore)
    store.save_result("k", "n", "f", None, {"ok": 1})
    assert run_store().finished_results("k")[("n", "f")].value == {"ok": 1}


# --- the run store -------------------------------------------------------------------


def test_results_saved_by_another_process_are_found_again(backend: str) -> None:
    finish(in_subprocess("""
        from foreman.engine.store import run_store
        store = run_store()
        store.save_result("run-1", "fetch", "fp1", "researcher", {"rows": [1, 2, 3]})
        store.save_result("run-1", "count", "fp2", None, 3)
        store.save_result("run-1", "count", "fp2", None, 4)   # saved again: replaced, not doubled
        store.record_run("run-1", "count the disk rows", "COMPLETED", None, {"nodes": ["fetch", "count"]},
                         [], 100.0, 2.5, "counted 4")
    """))
    store = run_store()
    assert isinstance(store, PgRunStore) == (backend == "postgres")
    found = store.finished_results("run-1")
    assert {key: (r.agent, r.value) for key, r in found.items()} == {
        ("fetch", "fp1"): ("researcher", {"rows": [1, 2, 3]}), ("count", "fp2"): (None, 4)}
    assert store.stored_plan("run-1") == {"nodes": ["fetch", "count"]}
    assert store.knows_run("run-1") and not store.knows_run("run-2")
    store.record_run("run-1", "count the disk rows", "FAILED", "budget", {"nodes": []}, [{"why": "x"}],
                     100.0, 3.0, "stopped")
    store.record_run("run-0", "water the plants", "COMPLETED", None, {}, [], 50.0, 1.0, "watered")
    assert store.recent_run_keys() == ["run-1", "run-0"]
    similar = store.similar_runs("how many disk rows are there")
    assert [(r.objective, r.status, r.stopped_by) for r in similar] == [("count the disk rows", "FAILED", "budget")]


def test_agent_records_are_the_same_on_both(backend: str) -> None:
    store = run_store()
    for i, status in enumerate([NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.FAILED]):
        store.record_node(f"r{i}", "n", "writer", "write", status, 2.0 + i, 1, None if i == 0 else "boom")
        time.sleep(0.01)  # outcomes are ordered by time
    store.record_node("r9", "s", None, None, NodeStatus.COMPLETED, 1.0, 1, None)  # a script step: no agent
    stats = store.agent_stats()
    assert list(stats) == ["writer"]
    writer = stats["writer"]
    assert (writer.runs, writer.successes, writer.consecutive_failures) == (3, 1, 2)
    assert writer.mean_duration_s == pytest.approx(3.0) and writer.last_failure_at is not None


# --- the audit log -------------------------------------------------------------------


WRITER = """
    import sys
    from foreman.tools.audit import AuditRecord, Decision, audit_log
    who = sys.argv[1] if len(sys.argv) > 1 else "{who}"
    log = audit_log()
    for i in range(20):
        log.record(AuditRecord(run_id="0a1b2c3d-run", run_name="brave-otter", tool="read_file",
                               arguments={{"path": f"{{who}}-{{i}}.txt"}}, agent=who,
                               outcome="refused" if i % 10 == 0 else "ok", duration_ms=1.5))
    log.record_decision(Decision(run_id="0a1b2c3d-run", step="deploy", decision="approved", decided_by=who,
                                 comment="looks fine", value="42"))
"""


def test_audit_records_and_decisions_from_two_processes_are_all_kept(backend: str) -> None:
    finish(in_subprocess(WRITER.format(who="worker-a")), in_subprocess(WRITER.format(who="worker-b")))
    log = audit_log()
    assert isinstance(log, PgAuditLog) == (backend == "postgres")
    for key in ("0a1b2c3d-run", "brave-otter", "0a1b2c3d"):  # by id, by name, by id prefix
        records = log.for_run(key)
        assert len(records) == 40
    assert sorted(r.arguments["path"] for r in records) == sorted(
        f"{w}-{i}.txt" for w in ("worker-a", "worker-b") for i in range(20))
    assert len({r.id for r in records}) == 40 and [r.id for r in records] == sorted(r.id for r in records)
    decisions = log.decisions("0a1b2c3d-run")
    assert sorted(d.decided_by for d in decisions) == ["worker-a", "worker-b"]
    assert all((d.decision, d.value, d.timed_out) == ("approved", "42", False) for d in decisions)
    assert log.decisions() == decisions
    [summary] = log.recent_runs()
    assert (summary["run_id"], summary["run_name"], summary["calls"], summary["refused"], summary["errors"]) == (
        "0a1b2c3d-run", "brave-otter", 40, 4, 0)


def test_the_callers_path_means_the_apps_log_when_the_url_is_set(backend: str, tmp_path: Path) -> None:
    """Callers pass `settings.audit_db`; with the URL set that is the shared log, not a local file."""
    written = audit_log(get_settings().audit_db).record(AuditRecord(tool="t", outcome="ok", run_id="r-1"))
    assert [r.id for r in audit_log().for_run("r-1")] == [written.id]
    elsewhere = audit_log(tmp_path / "other.sqlite3")  # a file named on purpose stays that file
    assert elsewhere.for_run("r-1") == [] and (tmp_path / "other.sqlite3").exists()


# --- memory --------------------------------------------------------------------------


def test_memory_keeps_each_users_threads_and_facts_to_themselves(vector_backend: str) -> None:
    embedder = default_embedder()
    store = open_memory(get_settings(), embedder.dim)
    assert isinstance(store, PgMemoryStore) == (vector_backend != "sqlite")
    if vector_backend != "sqlite":
        assert store.vectors.pgvector == (vector_backend == "pgvector")
    thread = store.create_thread("priya", "kitchen").id
    store.add_turn("priya", thread, "user", "My dog is called Rex.", 6)
    second = store.add_turn("priya", thread, "assistant", "Nice name.", 3)
    assert [t.ordinal for t in store.turns("priya", thread)] == [1, 2] and second.id is not None
    with pytest.raises(ThreadRefused):
        store.turns("sam", thread)
    with pytest.raises(ThreadRefused):
        store.create_thread("sam", "kitchen")
    texts = {"priya": ["The user's dog is called Rex.", "The user's router is on VLAN 30."],
             "sam": ["Sam's password is hunter2.", "Sam's dog is called Bella."]}
    for user, facts in texts.items():
        for text, vector in zip(facts, embedder.embed(facts), strict=True):
            _, created = store.add_fact(user, text, vector, source_thread=thread if user == "priya" else None)
            assert created
    again, created = store.add_fact("priya", "the user's DOG is called rex", embedder.embed(["x"])[0])
    assert not created and again.content == "The user's dog is called Rex."
    query = embedder.embed(["what is my pet's name"])[0]
    priya_hits = store.vector_search("priya", "facts", query, 10)
    by_id = store.facts_by_id("priya", [h.fact_id for h in priya_hits])
    assert by_id[priya_hits[0].fact_id].content == "The user's dog is called Rex."
    assert len(priya_hits) == 2 and all(f.user == "priya" for f in by_id.values())
    assert [h.fact_id for h in store.keyword_search("priya", "facts", "VLAN 30", 5)] == [
        f.id for f in store.facts("priya") if "VLAN" in f.content]
    assert store.keyword_search("priya", "facts", "hunter2 password", 5) == []  # Sam's, never Priya's
    assert store.facts_by_id("priya", [f.id for f in store.facts("sam")]) == {}
    assert [u["user"] for u in store.users()] == ["priya", "sam"]
    gone = store.forget_user("sam")
    assert (gone.facts, gone.vectors) == (2, 2)
    assert store.facts("sam") == [] and store.vector_search("sam", "facts", query, 5) == []
    assert [u["user"] for u in store.users()] == ["priya"]
    assert [(u["threads"], u["turns"], u["facts"]) for u in store.users()] == [(1, 2, 2)]


# --- knowledge -----------------------------------------------------------------------


def notes(folder: Path) -> Path:
    folder.mkdir()
    (folder / "ups.md").write_text("# UPS\n\nThe UPS battery warranty ends on 2026-04-02. Replace it before then.\n")
    (folder / "network.md").write_text("# Network\n\nThe printer lives on VLAN 30 at 10.0.30.7.\n")
    (folder / "garden.md").write_text("# Garden\n\nWater the tomatoes every second morning in July.\n")
    return folder


def test_knowledge_search_finds_the_right_passage_and_reingest_counts_unchanged(vector_backend: str,
                                                                                 tmp_path: Path) -> None:
    embedder = default_embedder()
    settings = get_settings()
    store = open_knowledge(settings, embedder.dim).store
    assert isinstance(store, PgKnowledgeStore) == (vector_backend != "sqlite")
    folder = notes(tmp_path / "notes")
    first = ingest(folder, name="home", roots=[tmp_path], settings=settings, embedder=embedder, store=store)
    assert sorted(first.added) == ["garden.md", "network.md", "ups.md"] and first.files_indexed == 3
    for mode, query, path in [("vector", "when does the battery guarantee run out", "ups.md"),
                              ("keyword", "VLAN 30", "network.md"),
                              ("hybrid", "how often should the tomatoes get water", "garden.md")]:
        found = search(store, embedder, ["home"], query, 3, mode)
        assert found[0].path == path, (mode, [p.path for p in found])
    again = ingest(folder, name="home", roots=[tmp_path], settings=settings, embedder=embedder,
                   store=open_knowledge(settings, embedder.dim).store)
    assert (again.unchanged, again.added, again.changed, again.chunks_embedded) == (3, [], [], 0)
    (folder / "network.md").write_text("# Network\n\nThe printer moved to VLAN 40.\n")
    (folder / "garden.md").unlink()
    third = ingest(folder, name="home", roots=[tmp_path], settings=settings, embedder=embedder, store=store)
    assert (third.unchanged, third.changed, third.removed) == (1, ["network.md"], ["garden.md"])
    found = search(store, embedder, ["home"], "VLAN", 5, "keyword")
    assert [p.path for p in found] == ["network.md"] and "VLAN 40" in found[0].text and "30" not in found[0].text
    assert all(p.path != "garden.md" for p in search(store, embedder, ["home"], "tomatoes water", 5, "vector"))
    info = store.base("home")
    assert (info.files, info.chunks) == (2, 2) and store.drop_base("home") and store.bases() == []


def test_a_second_process_reads_what_the_first_indexed(vector_backend: str, tmp_path: Path) -> None:
    """The index is shared: a worker process ingests, this process searches (PostgreSQL or the file)."""
    folder = notes(tmp_path / "notes")
    finish(in_subprocess(f"""
        from pathlib import Path
        from foreman.settings import get_settings
        from foreman.tools.knowledge.embedding import default_embedder
        from foreman.tools.knowledge.ingest import ingest
        from foreman.tools.knowledge.store import open_knowledge
        e = default_embedder()
        s = get_settings()
        ingest(Path({str(folder)!r}), name="home", roots=[Path({str(tmp_path)!r})], settings=s, embedder=e,
               store=open_knowledge(s, e.dim).store)
    """))
    embedder = default_embedder()
    store = open_knowledge(get_settings(), embedder.dim).store
    assert [b.name for b in store.bases()] == ["home"]
    assert search(store, embedder, ["home"], "printer address", 1, "hybrid")[0].path == "network.md"


def test_the_vector_column_follows_the_server_and_a_dimension_change_is_refused(debian_pg: TempPostgres,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    url = _use(debian_pg, monkeypatch)
    store = PgKnowledgeStore(PgDatabase(url, "foreman_knowledge"), 8)
    assert not store.vectors.pgvector  # Debian's PostgreSQL here has no pgvector: the portable column
    store.create_base("b", "/r", "m")
    with pytest.raises(ConfigurationError, match="8-dimensional vectors, not schema 1 with 16"):
        PgKnowledgeStore(PgDatabase(url, "foreman_knowledge"), 16)
    vectors = np.eye(8, dtype=np.float32)
    from foreman.tools.knowledge.chunking import Chunk
    from foreman.tools.knowledge.store import FileState

    chunks = [Chunk(path="a.md", ordinal=i, line_start=i, line_end=i, text=f"line {i}") for i in range(8)]
    store.put_file("b", FileState(path="a.md", fingerprint="x", size=1, chunks=8, kind="md"), chunks, vectors)
    hits = store.vector_search("b", vectors[3] + 0.1 * vectors[5], 2)
    texts = store.chunks([h.chunk_id for h in hits])
    assert [texts[h.chunk_id].text for h in hits] == ["line 3", "line 5"]
    assert hits[0].score == pytest.approx(1 / np.sqrt(1.01), rel=1e-5)
