"""The run store: finished sub-task results (for resuming) and run outcomes (for learning).

SQLite under Foreman's home, or PostgreSQL when FOREMAN_DATABASE_URL is set (`PgRunStore`,
same interface; `run_store()` picks). Resuming: a finished sub-task's result is saved the
moment it completes, keyed by the run and the sub-task's fingerprint, so re-running a
crashed or cancelled run redoes none of them. Learning: each run's objective, plan,
statuses, durations, failures and revisions are kept; the planner is shown the most
similar past runs, and agent selection reads each agent's record from here.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from foreman.db import PgDatabase, app_database
from foreman.engine.records import NodeStatus
from foreman.sqlite import SqliteStore
from foreman.tools.text import STOP_WORDS

SCHEMA = """
CREATE TABLE IF NOT EXISTS node_results (
    run_key TEXT NOT NULL, node_id TEXT NOT NULL, fingerprint TEXT NOT NULL,
    agent TEXT, result TEXT NOT NULL, finished_at REAL NOT NULL,
    PRIMARY KEY (run_key, node_id, fingerprint)
);
CREATE TABLE IF NOT EXISTS runs (
    run_key TEXT PRIMARY KEY, objective TEXT NOT NULL, status TEXT NOT NULL,
    stopped_by TEXT, plan TEXT NOT NULL, revisions TEXT NOT NULL,
    started_at REAL NOT NULL, duration_s REAL NOT NULL, summary TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS node_outcomes (
    run_key TEXT NOT NULL, node_id TEXT NOT NULL, agent TEXT, capability TEXT,
    status TEXT NOT NULL, duration_s REAL NOT NULL, attempts INTEGER NOT NULL,
    error TEXT, at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS node_outcomes_agent ON node_outcomes (agent, at);
CREATE TABLE IF NOT EXISTS run_owners (run_key TEXT PRIMARY KEY, owner TEXT NOT NULL);
"""

WORD = re.compile(r"[a-z0-9]+")


class FinishedResult(BaseModel):
    """A sub-task result kept for resuming: who produced it (None for a script step) and what."""

    agent: str | None
    value: Any


class AgentStats(BaseModel):
    agent: str
    runs: int
    successes: int
    mean_duration_s: float
    consecutive_failures: int
    last_failure_at: float | None

    @property
    def success_rate(self) -> float:
        """Laplace-smoothed, so one lucky run does not beat a long good record."""
        return (self.successes + 1) / (self.runs + 2)


class PastRun(BaseModel):
    objective: str
    status: str
    stopped_by: str | None
    summary: str
    similarity: float


class RunStore(SqliteStore):
    SCHEMA = SCHEMA

    # --- resuming ---------------------------------------------------------------

    def save_result(self, run_key: str, node_id: str, fingerprint: str, agent: str | None, result: Any) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO node_results VALUES (?, ?, ?, ?, ?, ?)",
                (run_key, node_id, fingerprint, agent, json.dumps(result, default=str), time.time()),
            )

    def finished_results(self, run_key: str) -> dict[tuple[str, str], FinishedResult]:
        """(node id, fingerprint) -> what finished, for every sub-task this run finished."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT node_id, fingerprint, agent, result FROM node_results WHERE run_key = ?", (run_key,)
            ).fetchall()
        return {(r["node_id"], r["fingerprint"]): FinishedResult(agent=r["agent"], value=json.loads(r["result"]))
                for r in rows}

    # --- learning ---------------------------------------------------------------

    def record_node(self, run_key: str, node_id: str, agent: str | None, capability: str | None,
                    status: NodeStatus | str, duration_s: float, attempts: int, error: str | None) -> None:
        """One sub-task's outcome. `agent` is None for a script step, which no agent ran."""
        with self._connect() as db:
            db.execute(
                "INSERT INTO node_outcomes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_key, node_id, agent, capability, NodeStatus(status).value, duration_s, attempts, error,
                 time.time()),
            )

    def record_run(self, run_key: str, objective: str, status: str, stopped_by: str | None,
                   plan: dict, revisions: list[dict], started_at: float, duration_s: float, summary: str) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_key, objective, status, stopped_by, json.dumps(plan), json.dumps(revisions),
                 started_at, duration_s, summary),
            )

    def stored_plan(self, run_key: str) -> dict | None:
        """The plan a run started with (or was revised to), so a re-run resumes the same graph."""
        with self._connect() as db:
            row = db.execute("SELECT plan FROM runs WHERE run_key = ?", (run_key,)).fetchone()
        return json.loads(row["plan"]) if row else None

    def knows_run(self, run_key: str) -> bool:
        """Whether a run with this key started here (a resume of an unknown key is an error)."""
        with self._connect() as db:
            row = db.execute("SELECT 1 FROM runs WHERE run_key = ? UNION SELECT 1 FROM node_results"
                             " WHERE run_key = ? LIMIT 1", (run_key, run_key)).fetchone()
        return row is not None

    def recent_run_keys(self, limit: int = 5) -> list[str]:
        with self._connect() as db:
            rows = db.execute("SELECT run_key FROM runs ORDER BY started_at DESC LIMIT ?", (limit,)).fetchall()
        return [r["run_key"] for r in rows]

    def agent_stats(self, window: int = 50) -> dict[str, AgentStats]:
        """Each agent's record over its last `window` sub-tasks."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT agent, status, duration_s, at FROM node_outcomes"
                " WHERE agent IS NOT NULL AND status IN (?, ?) ORDER BY at DESC",
                (NodeStatus.COMPLETED.value, NodeStatus.FAILED.value),
            ).fetchall()
        by_agent: dict[str, list[sqlite3.Row]] = {}
        for row in rows:
            bucket = by_agent.setdefault(row["agent"], [])
            if len(bucket) < window:
                bucket.append(row)
        stats = {}
        for agent, items in by_agent.items():
            streak = 0
            for row in items:  # newest first
                if row["status"] != NodeStatus.FAILED.value:
                    break
                streak += 1
            failures = [r["at"] for r in items if r["status"] == NodeStatus.FAILED.value]
            stats[agent] = AgentStats(
                agent=agent,
                runs=len(items),
                successes=sum(r["status"] == NodeStatus.COMPLETED.value for r in items),
                mean_duration_s=sum(r["duration_s"] for r in items) / len(items),
                consecutive_failures=streak,
                last_failure_at=max(failures) if failures else None,
            )
        return stats

    def set_owner(self, run_key: str, owner: str) -> None:
        """Whose run this is (a chat user's `/plan`): only their own later runs learn from it."""
        with self._connect() as db:
            db.execute("DELETE FROM run_owners WHERE run_key = ?", (run_key,))
            db.execute("INSERT INTO run_owners VALUES (?, ?)", (run_key, owner))

    def similar_runs(self, objective: str, limit: int = 3, owner: str | None = None) -> list[PastRun]:
        """Past runs of the same owner (or, for `owner=None`, of nobody in particular: `foreman
        run`) whose objectives share the most distinctive words with this one (TF-IDF cosine).
        One user's runs are never shown to another's planner: an objective can hold a secret."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT objective, status, stopped_by, summary FROM runs LEFT JOIN run_owners USING (run_key) "
                "WHERE COALESCE(owner, '') = ? ORDER BY started_at DESC LIMIT 500", (owner or "",)
            ).fetchall()
        if not rows:
            return []
        docs = [_terms(r["objective"]) for r in rows]
        frequency = Counter(t for doc in docs for t in set(doc))
        idf = {t: math.log((1 + len(docs)) / (1 + n)) + 1 for t, n in frequency.items()}
        query = _vector(_terms(objective), idf)
        scored = []
        for row, doc in zip(rows, docs):
            score = _cosine(query, _vector(doc, idf))
            if score > 0:
                scored.append(PastRun(objective=row["objective"], status=row["status"],
                                      stopped_by=row["stopped_by"], summary=row["summary"], similarity=round(score, 3)))
        return sorted(scored, key=lambda r: -r.similarity)[:limit]


def _terms(text: str) -> list[str]:
    return [w for w in WORD.findall(text.lower()) if w not in STOP_WORDS]


def _vector(terms: list[str], idf: dict[str, float]) -> dict[str, float]:
    counts = Counter(terms)
    return {t: n * idf.get(t, 1.0) for t, n in counts.items()}


def _cosine(a: dict[str, float], b: dict[str, float]) -> float:
    dot = sum(v * b.get(t, 0.0) for t, v in a.items())
    norm = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
    return dot / norm if norm else 0.0


PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS node_results (
    run_key TEXT NOT NULL, node_id TEXT NOT NULL, fingerprint TEXT NOT NULL,
    agent TEXT, result TEXT NOT NULL, finished_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_key, node_id, fingerprint)
);
CREATE TABLE IF NOT EXISTS runs (
    run_key TEXT PRIMARY KEY, objective TEXT NOT NULL, status TEXT NOT NULL,
    stopped_by TEXT, plan TEXT NOT NULL, revisions TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL, duration_s DOUBLE PRECISION NOT NULL, summary TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS node_outcomes (
    run_key TEXT NOT NULL, node_id TEXT NOT NULL, agent TEXT, capability TEXT,
    status TEXT NOT NULL, duration_s DOUBLE PRECISION NOT NULL, attempts INTEGER NOT NULL,
    error TEXT, at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS node_outcomes_agent ON node_outcomes (agent, at);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE TABLE IF NOT EXISTS run_owners (run_key TEXT PRIMARY KEY, owner TEXT NOT NULL)
"""


class PgRunStore(RunStore):
    """The run store in PostgreSQL (schema `foreman_runs`): what every worker process shares.

    Only the upserts differ from SQLite's dialect; every read is the SQLite store's own code."""

    def __init__(self, db: PgDatabase) -> None:
        self.db = db
        self.path = db.where  # type: ignore[assignment]  (named in messages, as the file is)
        db.ensure(PG_SCHEMA)

    def _connect(self):  # type: ignore[override]
        return self.db.connect()

    def save_result(self, run_key: str, node_id: str, fingerprint: str, agent: str | None, result: Any) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO node_results VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_key, node_id, fingerprint)"
                " DO UPDATE SET agent = EXCLUDED.agent, result = EXCLUDED.result, finished_at = EXCLUDED.finished_at",
                (run_key, node_id, fingerprint, agent, json.dumps(result, default=str), time.time()),
            )

    def record_run(self, run_key: str, objective: str, status: str, stopped_by: str | None,
                   plan: dict, revisions: list[dict], started_at: float, duration_s: float, summary: str) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_key) DO UPDATE SET"
                " objective = EXCLUDED.objective, status = EXCLUDED.status, stopped_by = EXCLUDED.stopped_by,"
                " plan = EXCLUDED.plan, revisions = EXCLUDED.revisions, started_at = EXCLUDED.started_at,"
                " duration_s = EXCLUDED.duration_s, summary = EXCLUDED.summary",
                (run_key, objective, status, stopped_by, json.dumps(plan), json.dumps(revisions),
                 started_at, duration_s, summary),
            )


def run_store(path: Path | None = None) -> RunStore:
    """The run store: the SQLite file at `path`; without one, the app's (FOREMAN_DATABASE_URL's
    PostgreSQL when set, else runs.sqlite3 under FOREMAN_HOME)."""
    if path is None:
        pg = app_database("foreman_runs")
        if pg is not None:
            return PgRunStore(pg)
        from foreman.settings import get_settings

        path = get_settings().home / "runs.sqlite3"
    return RunStore(path)
