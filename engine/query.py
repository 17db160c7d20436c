"""The query route: the model writes one SELECT over the tables that match; Python does the rest.

A small model asked to add up numbers it reads in passages gets them wrong; asked to write one
SQL query over typed tables it gets most of them right (issue #25). So for a question that
needs a computed step:

1. `pick_tables` (`engine/table_choice.py`) chooses the few tables the question is about, by
   the rarity-weighted question words each table's name, columns and cell values hold, adding a second or third table only
   when it covers words the first does not (a two-hop question). Showing every table made the
   model pick the wrong one.
2. One model call sees those tables as `CREATE TABLE` statements with their units, the values a
   short text column takes, row counts and three rows, and writes one SELECT.
3. `tools/tables/query.py` checks it (one read-only SELECT over the tables shown) and runs it
   in a closed box. A refusal, an engine error or an empty result goes back to the model once,
   with the message.
4. Python renders the answer: a single value with its unit, or the rows; the source rows
   (`path:line`) are the evidence. A write request writes the rows through the guarded,
   audited `write_file` tool.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from datetime import date
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, Field
from sqlglot import exp

from foreman.engine.plan import Plan, SubTask
from foreman.engine.table_choice import pick_tables
from foreman.errors import QueryFailed, QueryRefused
from foreman.tools.tables.query import QueryResult, check_query, run_query
from foreman.tools.tables.store import SOURCE, TableCard, TableCatalog

QUERY_MAX_TOKENS = 300
ROWS_SHOWN = 20  # rows rendered in the answer; all of them go to a file that is written
_SQL_BLOCK = re.compile(r"```(?:sql|duckdb)?\s*(.*?)```", re.IGNORECASE | re.DOTALL)

SYSTEM = (
    "You write one DuckDB SQL query that answers the user's question from the tables given. "
    "Rules: write exactly one SELECT; use only the tables and columns shown; match text with ILIKE '%word%'; "
    "return the columns the question asks about, and for 'which' or 'who' questions also the column that names "
    "each row; use COUNT(*) to count, SUM to total, AVG for an average; subtracting two dates gives days; "
    "two TIME or TIMESTAMP values subtract to an interval; dayname(d) is the weekday ('Saturday'), "
    "EXTRACT(month FROM d) the month number, d BETWEEN DATE '<first day>' AND DATE '<last day>' a date range. "
    "Reply with the SQL only, in a ```sql block."
)



class WriteRequest(BaseModel):
    """A file the objective asks to be written from the query's rows."""

    path: str

    @property
    def format(self) -> str:
        suffix = self.path.rsplit(".", 1)[-1].lower() if "." in self.path else "md"
        return {"csv": "csv", "tsv": "csv", "json": "json"}.get(suffix, "markdown")


class QueryAnswer(BaseModel):
    """The query route's result: the answer a person reads, the query, its rows and their sources."""

    question: str
    answer: str
    sql: str = ""
    columns: list[str] = Field(default_factory=list)
    rows: list[list[Any]] = Field(default_factory=list)
    truncated: bool = False
    tables: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)
    evidence: list[str] = Field(default_factory=list)
    refusals: list[str] = Field(default_factory=list, description="why a query was refused or failed, each try")
    written: str | None = None
    unreadable: dict[str, str] = Field(default_factory=dict, description="table files that could not be read, why")
    calls: int = 0
    tokens: int = 0
    seconds: float = 0.0

    @property
    def text(self) -> str:
        """What a person is shown: the answer, the query, and the rows it rests on."""
        parts = [self.answer]
        if self.written:
            parts.append(f"Wrote {self.written}.")
        parts.append(f"Computed by Foreman with:\n{self.sql}")
        if self.unreadable:
            parts.append("Could not read as tables (not queried): "
                         + "; ".join(f"{path} ({why})" for path, why in self.unreadable.items()))
        if self.evidence:
            shown = self.evidence[:ROWS_SHOWN]
            more = f"\n- … and {len(self.evidence) - len(shown)} more" if len(self.evidence) > len(shown) else ""
            parts.append("From the rows:\n" + "\n".join(f"- {line}" for line in shown) + more)
        return "\n\n".join(parts)



def schema(card: TableCard, sample_rows: int = 3) -> str:
    """A table as the model sees it: CREATE TABLE with comments, then a few rows."""
    lines = [f"CREATE TABLE {card.name} (  -- {card.rows} rows, from {card.path}"
             + (f" ({card.label})" if card.label and card.kind != "log" else "")]
    for i, column in enumerate(card.columns):
        notes = []
        if column.unit:
            notes.append(f"in {column.unit}")
        if column.type == "DATE" and re.search(r"week", column.name):
            notes.append(f"the week from {column.name} to {column.name} + 6")
        if column.span:
            notes.append(f"from {column.span}")
        if column.values:
            notes.append("values: " + ", ".join(f"'{v}'" for v in column.values))
        elif column.shapes:
            notes.append("its values look like (<n>: a number): " + "; ".join(column.shapes))
        comma = "," if i < len(card.columns) - 1 else ""
        lines.append(f"  {column.name} {column.type}{comma}" + (f"  -- {'; '.join(notes)}" if notes else ""))
    lines.append(");")
    if card.sample:
        lines.append(f"/* {min(sample_rows, len(card.sample))} rows of {card.name}:")
        lines.append(" | ".join(c.name for c in card.columns))
        for row in card.sample[:sample_rows]:
            lines.append(" | ".join(_short(row.get(c.name)) for c in card.columns))
        lines.append("*/")
    return "\n".join(lines)


def _short(value: Any) -> str:
    text = "NULL" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


_RELATIVE = re.compile(r"\b(today|now|current(ly)?|next|last|this (week|month|year)|ago|until|since|upcoming|"
                       r"overdue|soon|already|still|left|remaining|expired?|due)\b", re.IGNORECASE)


# Two worked examples on invented tables (no one's data): how a filter uses the values a column
# is shown with, how "on how many days" counts days, how "which" returns the naming column.
_EXAMPLES = [
    ("CREATE TABLE jobs (  -- 90 rows, from logs/jobs.log\n  ts TIMESTAMP,\n  day DATE,\n"
     "  level VARCHAR,  -- values: 'ERROR', 'INFO', 'OK'\n  component VARCHAR,  -- values: 'mailer', 'sync'\n"
     "  message VARCHAR\n);",
     "On how many days did the mailer fail?",
     "SELECT COUNT(DISTINCT day) FROM jobs WHERE component = 'mailer' AND level = 'ERROR'"),
    ("CREATE TABLE parts (  -- 40 rows, from parts.csv\n  name VARCHAR,\n  price_eur DOUBLE,  -- in EUR\n"
     "  supplier VARCHAR  -- values: 'Acme Ltd', 'Bolt & Co'\n);",
     "Which of the Acme parts cost more than 20 euro?",
     "SELECT name, price_eur FROM parts WHERE supplier ILIKE '%acme%' AND price_eur > 20"),
]


def query_prompt(question: str, cards: list[TableCard], today: date | None = None) -> list:
    """The worked examples, the tables, then the question. Today's date only when the question is
    relative to it: given it always, the 1.5B put it in filters of questions about a fixed month."""
    tables = "\n\n".join(schema(c) for c in cards)
    when = f"-- Today is {(today or date.today()).isoformat()} (CURRENT_DATE).\n" if _RELATIVE.search(question) else ""
    messages: list = [SystemMessage(content=SYSTEM)]
    for table, asked, sql in _EXAMPLES:
        messages += [HumanMessage(content=f"{table}\n\n-- Question: {asked}\n-- One SELECT that answers it:"),
                     AIMessage(content=f"```sql\n{sql}\n```")]
    return [*messages, HumanMessage(content=f"{tables}\n\n{when}-- Question: {question}\n-- One SELECT that answers it:")]


def extract_sql(reply: str) -> str:
    """The SQL in a reply: the fenced block if there is one, else the text from SELECT/WITH on."""
    found = _SQL_BLOCK.search(reply)
    text = found.group(1) if found else reply
    start = re.search(r"\b(WITH|SELECT)\b", text, re.IGNORECASE)
    return (text[start.start():] if start else text).strip().rstrip(";").strip()


def answer_with_query(question: str, catalog: TableCatalog, model: BaseChatModel, *,
                      tables: list[str] | None = None, write: WriteRequest | None = None,
                      write_file: Any = None, today: date | None = None, rows_required: bool = False) -> QueryAnswer:
    """Answer `question` with one checked query over the matching tables (one retry with the
    error). Raises `QueryFailed` when no try gave rows the answer can rest on; the refusals are
    in its message."""
    started = time.monotonic()
    names = tables or [m.name for m in pick_tables(question, catalog)]
    if not names:
        raise QueryFailed("no table in the workspace matches the question")
    cards = [catalog.tables[n] for n in names]
    messages = query_prompt(question, cards, today)
    refusals: list[str] = []
    calls = tokens = 0
    result: QueryResult | None = None
    for attempt in range(2):
        reply, used = _ask(model, messages)
        calls, tokens = calls + 1, tokens + used
        sql = extract_sql(reply)
        try:
            result = run_query(catalog, sql, names)
        except (QueryRefused, QueryFailed) as exc:
            refusals.append(f"{type(exc).__name__}: {exc}")
            feedback = f"That query cannot be used: {exc}. Write one corrected SELECT."
        else:
            zero = result.unmatched and all(v in (None, 0) for row in result.rows for v in row)
            if result.rows and not _all_null(result) and not (zero and attempt == 0):
                break
            if zero and result.rows:  # a count or total of nothing, because a filter met no row
                refusals.append(f"zero: {' '.join(result.unmatched)}")
                feedback = (f"That query gave {result.rows[0][0]}: {' '.join(result.unmatched)} Use a value the "
                            "column has, then write one corrected SELECT.")
                if attempt == 0:
                    messages = [*messages, AIMessage(content=f"```sql\n{sql}\n```"), HumanMessage(content=feedback)]
                continue
            refusals.append("empty: the query returned no rows" if not result.rows else "empty: only NULL")
            feedback = ("That query returned no rows. " + " ".join(result.unmatched) + " Check each filter against "
                        "the values shown (case, spelling, ILIKE '%word%'), then write one corrected SELECT. "
                        "If no row can match, write it again.")
        if attempt == 0:
            messages = [*messages, AIMessage(content=f"```sql\n{sql}\n```"), HumanMessage(content=feedback)]
    if result is None or (result.rows and _all_null(result)) or (rows_required and not result.rows):
        raise QueryFailed("; ".join(refusals))  # NULL is never an answer; nor is no row, for a join
    answer = QueryAnswer(question=question, answer=render(result, cards), sql=result.sql, columns=result.columns,
                         rows=result.rows, truncated=result.truncated, tables=names, sources=result.sources,
                         evidence=result.evidence, refusals=refusals, calls=calls, tokens=tokens,
                         unreadable=unreadable(catalog))
    if write is not None and write_file is not None:
        write_file(path=write.path, content=file_content(result, write))
        answer.written = write.path
    answer.seconds = time.monotonic() - started
    return answer


_NOT_BROKEN = ("no table in it", "not a table-shaped file", "no list of records in it", "no timestamped lines", "empty")


def unreadable(catalog: TableCatalog) -> dict[str, str]:
    """Files that look like tables (.csv, .json, …) but could not be read as one: a person should
    know the answer did not count them."""
    return {path: why for path, why in catalog.skipped.items()
            if why not in _NOT_BROKEN and not why.startswith("no rows")}


def _ask(model: BaseChatModel, messages: list) -> tuple[str, int]:
    reply = model.invoke(messages, max_tokens=QUERY_MAX_TOKENS, temperature=0.0)
    text = reply.content if isinstance(reply.content, str) else str(reply.content)
    usage = getattr(reply, "usage_metadata", None) or {}
    return text, int(usage.get("total_tokens", 0))


def _all_null(result: QueryResult) -> bool:
    return all(v is None for row in result.rows for v in row)


def render(result: QueryResult, cards: list[TableCard]) -> str:
    """The answer in Python's words: one value with its unit, else the rows as a small table."""
    if not result.rows:
        return "No rows match."
    if len(result.rows) == 1 and len(result.columns) == 1:
        return f"{_value(result.rows[0][0])}{_unit(result.sql, cards)}"
    if len(result.columns) == 1:
        values = [_value(r[0]) for r in result.rows[:ROWS_SHOWN]]
        more = f" … ({len(result.rows) - len(values)} more)" if len(result.rows) > len(values) else ""
        return ", ".join(values) + more
    if len(result.rows) == 1:
        return ", ".join(f"{c}: {_value(v)}" for c, v in zip(result.columns, result.rows[0]))
    return markdown_table(result.columns, result.rows[:ROWS_SHOWN]) + (
        f"\n(first {ROWS_SHOWN} of {len(result.rows)}{'+' if result.truncated else ''} rows)"
        if len(result.rows) > ROWS_SHOWN else "")


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if not value.is_integer() else str(int(value))
    return "NULL" if value is None else str(value)


def _unit(sql: str, cards: list[TableCard]) -> str:
    """The unit of the one column a single-value answer is computed from (not for a count)."""
    try:
        query = check_query(sql, {c.name.lower() for c in cards})
    except QueryRefused:
        return ""
    if not isinstance(query, exp.Select) or len(query.expressions) != 1:
        return ""
    projection = query.expressions[0]
    if projection.find(exp.Count):
        return ""
    used = {c.name.lower() for c in projection.find_all(exp.Column)}
    units = {col.unit for card in cards for col in card.columns if col.name.lower() in used and col.unit}
    if len(units) != 1:
        return ""
    unit = units.pop()
    return unit if unit == "%" else f" {unit}"


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)
    body = ["| " + " | ".join(_value(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join([head, *body])


def file_content(result: QueryResult, write: WriteRequest) -> str:
    """The rows as the file the person asked for: CSV, JSON records, or a Markdown table."""
    columns = [c for c in result.columns if c != SOURCE]
    if write.format == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows(result.rows)
        return out.getvalue()
    if write.format == "json":
        return json.dumps([dict(zip(columns, row)) for row in result.rows], indent=2, default=str) + "\n"
    return markdown_table(columns, result.rows) + "\n"


def query_plan(objective: str, decided: Any, answered: QueryAnswer) -> Plan:
    """The one-step plan a query-route run records: one "query" step."""
    step = SubTask(id="query", title="Query the workspace's tables", agent="generalist", retries=0,
                   instructions=f"Write one SELECT over {', '.join(answered.tables)} that answers: {objective}")
    return Plan(objective=objective, rationale=f"query route: {decided.reason}", tasks=[step])
