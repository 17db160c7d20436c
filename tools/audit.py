"""The audit log: every tool call and every refusal, in SQLite under Foreman's home, or in
PostgreSQL when FOREMAN_DATABASE_URL is set (`PgAuditLog`, same interface; `audit_log()` picks),
so the records of every worker process and Dask worker land in one place.

Each record says which tool, with which arguments, called by which agent in which
task of which Prefect run, what came of it and how long it took. Records are written
by the tool wrapper (`catalog`) and, for calls to tools outside a task's scope, by
`scope.AuditHandler`; nothing a tool does can skip it. `foreman audit RUN` reads it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from foreman.db import PgDatabase, database
from foreman.sqlite import SqliteStore

Outcome = Literal["ok", "error", "refused"]
MAX_TEXT = 2_000  # per stored text field (arguments, detail, comment, value): a record, not a copy of the data
NO_ANSWER = "resumed without an answer"  # the run went on, but nobody decided at the approval point

SCHEMA = """
CREATE TABLE IF NOT EXISTS tool_calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    run_id TEXT,
    run_name TEXT,
    flow_name TEXT,
    task_id TEXT,
    task_name TEXT,
    agent TEXT,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    duration_ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tool_calls_run ON tool_calls (run_id);
CREATE INDEX IF NOT EXISTS tool_calls_run_name ON tool_calls (run_name);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    run_id TEXT,
    run_name TEXT,
    flow_name TEXT,
    step TEXT NOT NULL,
    decision TEXT NOT NULL,
    decided_by TEXT,
    comment TEXT NOT NULL,
    timed_out INTEGER NOT NULL,
    value TEXT
);
CREATE INDEX IF NOT EXISTS decisions_run ON decisions (run_id);
"""


class CallContext(BaseModel):
    """Where a call happened: the Prefect run and the ControlFlow agent and task."""

    run_id: str | None = None
    run_name: str | None = None
    flow_name: str | None = None
    task_id: str | None = None
    task_name: str | None = None
    agent: str | None = None


class AuditRecord(CallContext):
    id: int | None = None
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    outcome: Outcome
    detail: str = ""
    duration_ms: float = 0.0


class Decision(CallContext):
    """A human decision at an approval point: who (when known), when, what, why.

    `decided_by` is the name the person typed (or the terminal's user), not an authenticated
    identity: anyone who can reach the Prefect API can resume a run under any name."""

    id: int | None = None
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    step: str
    decision: Literal["approved", "rejected", "resumed without an answer"]
    decided_by: str | None = Field(default=None, description="As typed; not authenticated.")
    comment: str = ""
    timed_out: bool = False
    value: str | None = Field(default=None, description="The typed answer, when the step asked for one.")


def current_context() -> CallContext:
    """Read the Prefect run and the ControlFlow agent/task active in this thread, if any."""
    context = CallContext()
    try:
        from prefect.context import FlowRunContext

        flow_ctx = FlowRunContext.get()
        if flow_ctx and flow_ctx.flow_run:
            context.run_id = str(flow_ctx.flow_run.id)
            context.run_name = flow_ctx.flow_run.name
            context.flow_name = flow_ctx.flow.name if flow_ctx.flow else None
    except Exception:  # noqa: BLE001, S110  (no Prefect run: the record keeps empty fields)
        pass
    try:
        from controlflow.utilities.context import ctx

        orchestrator = ctx.get("orchestrator")
        if orchestrator is not None:
            context.agent = orchestrator.agent.name if orchestrator.agent else None
            tasks = orchestrator.get_tasks("assigned")
            if tasks:
                context.task_id = ",".join(t.id for t in tasks)
                context.task_name = ",".join(t.friendly_name() for t in tasks)
    except Exception:  # noqa: BLE001, S110  (no ControlFlow turn: the record keeps empty fields)
        pass
    return context


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"… [{len(text) - MAX_TEXT} chars cut]"


class AuditLog(SqliteStore):
    """A small SQLite store. Opens a connection per operation, so threads can share it."""

    SCHEMA = SCHEMA
    ADDED_COLUMNS = (("decisions", "value", "TEXT"),)

    def record(self, record: AuditRecord) -> AuditRecord:
        with self._connect() as db:
            cursor = db.execute(
                "INSERT INTO tool_calls (at, run_id, run_name, flow_name, task_id, task_name, agent,"
                " tool, arguments, outcome, detail, duration_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.at.isoformat(),
                    record.run_id,
                    record.run_name,
                    record.flow_name,
                    record.task_id,
                    record.task_name,
                    record.agent,
                    record.tool,
                    _clip(json.dumps(record.arguments, default=str)),
                    record.outcome,
                    _clip(record.detail),
                    record.duration_ms,
                ),
            )
        return record.model_copy(update={"id": cursor.lastrowid})

    def for_run(self, run: str) -> list[AuditRecord]:
        """Records of one run, by flow-run id, id prefix or run name."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM tool_calls WHERE run_id = ? OR run_name = ? OR run_id LIKE ?"
                " ORDER BY id",
                (run, run, f"{run}%" if len(run) >= 8 else run),
            ).fetchall()
        return [_from_row(row) for row in rows]

    def record_decision(self, decision: Decision) -> Decision:
        with self._connect() as db:
            cursor = db.execute(
                "INSERT INTO decisions (at, run_id, run_name, flow_name, step, decision, decided_by, comment,"
                " timed_out, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (decision.at.isoformat(), decision.run_id, decision.run_name, decision.flow_name, decision.step,
                 decision.decision, None if decision.decided_by is None else _clip(decision.decided_by),
                 _clip(decision.comment), int(decision.timed_out),
                 None if decision.value is None else _clip(decision.value)),
            )
        return decision.model_copy(update={"id": cursor.lastrowid})

    def decisions(self, run: str | None = None) -> list[Decision]:
        """Decisions of one run (id, id prefix or name), or of every run when `run` is None."""
        with self._connect() as db:
            if run is None:
                rows = db.execute("SELECT * FROM decisions ORDER BY id").fetchall()
            else:
                rows = db.execute(
                    "SELECT * FROM decisions WHERE run_id = ? OR run_name = ? OR run_id LIKE ? ORDER BY id",
                    (run, run, f"{run}%" if len(run) >= 8 else run),
                ).fetchall()
        return [Decision(**{**dict(r), "timed_out": bool(r["timed_out"])}) for r in rows]

    def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT run_id, run_name, flow_name, MIN(at) AS first, COUNT(*) AS calls,"
                " SUM(outcome = 'refused') AS refused, SUM(outcome = 'error') AS errors"
                " FROM tool_calls GROUP BY run_id ORDER BY MIN(id) DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [dict(row) for row in rows]


def _from_row(row: sqlite3.Row) -> AuditRecord:
    data = dict(row)
    try:
        data["arguments"] = json.loads(data["arguments"])
    except json.JSONDecodeError:
        data["arguments"] = {"_raw": data["arguments"]}
    return AuditRecord(**data)


PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS tool_calls (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at TEXT NOT NULL, run_id TEXT, run_name TEXT, flow_name TEXT, task_id TEXT, task_name TEXT, agent TEXT,
    tool TEXT NOT NULL, arguments TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL,
    duration_ms DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS tool_calls_run ON tool_calls (run_id);
CREATE INDEX IF NOT EXISTS tool_calls_run_name ON tool_calls (run_name);
CREATE TABLE IF NOT EXISTS decisions (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at TEXT NOT NULL, run_id TEXT, run_name TEXT, flow_name TEXT, step TEXT NOT NULL, decision TEXT NOT NULL,
    decided_by TEXT, comment TEXT NOT NULL, timed_out INTEGER NOT NULL, value TEXT
);
CREATE INDEX IF NOT EXISTS decisions_run ON decisions (run_id)
"""


class PgAuditLog(AuditLog):
    """The audit log in PostgreSQL (schema `foreman_audit`). Ids come from `RETURNING` (there is
    no `lastrowid`); the reads are the SQLite log's own code except the per-run summary."""

    def __init__(self, db: PgDatabase) -> None:
        self.db = db
        self.path = db.where  # type: ignore[assignment]
        db.ensure(PG_SCHEMA)

    def _connect(self):  # type: ignore[override]
        return self.db.connect()

    def record(self, record: AuditRecord) -> AuditRecord:
        with self._connect() as db:
            row = db.execute(
                "INSERT INTO tool_calls (at, run_id, run_name, flow_name, task_id, task_name, agent,"
                " tool, arguments, outcome, detail, duration_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (record.at.isoformat(), record.run_id, record.run_name, record.flow_name, record.task_id,
                 record.task_name, record.agent, record.tool, _clip(json.dumps(record.arguments, default=str)),
                 record.outcome, _clip(record.detail), record.duration_ms),
            ).fetchone()
        return record.model_copy(update={"id": row[0]})

    def record_decision(self, decision: Decision) -> Decision:
        with self._connect() as db:
            row = db.execute(
                "INSERT INTO decisions (at, run_id, run_name, flow_name, step, decision, decided_by, comment,"
                " timed_out, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (decision.at.isoformat(), decision.run_id, decision.run_name, decision.flow_name, decision.step,
                 decision.decision, None if decision.decided_by is None else _clip(decision.decided_by),
                 _clip(decision.comment), int(decision.timed_out),
                 None if decision.value is None else _clip(decision.value)),
            ).fetchone()
        return decision.model_copy(update={"id": row[0]})

    def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT run_id, MIN(run_name) AS run_name, MIN(flow_name) AS flow_name, MIN(at) AS first,"
                " COUNT(*) AS calls, COUNT(*) FILTER (WHERE outcome = 'refused') AS refused,"
                " COUNT(*) FILTER (WHERE outcome = 'error') AS errors"
                " FROM tool_calls GROUP BY run_id ORDER BY MIN(id) DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [dict(row) for row in rows]


def audit_log(path: Path | None = None, *, settings: Any = None) -> AuditLog:
    """The audit log at `path`, or the app's: FOREMAN_DATABASE_URL's PostgreSQL when set, else
    audit.sqlite3 under the home. A `path` that is the settings' own `audit_db` means the app's
    log too (callers pass `settings.audit_db`), so setting the URL moves every caller's records."""
    if settings is None:
        from foreman.settings import get_settings

        settings = get_settings()
    if path is None or Path(path) == settings.audit_db:
        pg = database("foreman_audit", settings.database_url)
        if pg is not None:
            return PgAuditLog(pg)
        path = settings.audit_db
    return AuditLog(path)


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000
