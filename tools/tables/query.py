"""One read-only SELECT over the tables a model was shown: checked by a parser, run in a box.

A query a model writes is untrusted text (a workspace note can ask for other SQL). Two walls:

1. `check_query` parses it with sqlglot (DuckDB dialect) before anything runs: exactly one
   statement, a SELECT (with CTEs, unions, subqueries); every table it names is one it was shown
   or one of its own CTEs; no table functions (`read_csv('/etc/passwd')`), no function that
   reads files, settings or the environment; no schema-qualified names. Anything else is
   `QueryRefused`, with the reason the model is told on its one retry.
2. `run_query` loads only the shown tables into a private in-memory DuckDB, then turns off
   external access and locks the configuration, so even a query that slipped past the parser
   cannot reach a file, the network or an extension. One thread, a memory cap, a row cap
   (`LIMIT` added around the query) and a wall-clock limit (the query is interrupted).

`run_query` also finds each result's evidence: the source rows (`path:line`) the answer came
from. A query without aggregation returns its rows' own sources; an aggregate is traced by
running its FROM/JOIN/WHERE again for the sources of the rows it summed or counted.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
import threading
from typing import Any

import duckdb
import sqlglot
from pydantic import BaseModel, Field
from sqlglot import exp

from foreman.errors import QueryFailed, QueryRefused
from foreman.tools.tables.store import SOURCE, TableCatalog

ROW_CAP = 200
EVIDENCE_CAP = 50
TIME_LIMIT_S = 10.0
MEMORY_LIMIT = "512MB"
# Functions that read files, the network, settings or the environment, or run other SQL.
_FORBIDDEN_FUNCTION = re.compile(
    r"^(read_\w+|\w+_scan|glob|sniff_csv|parquet_\w+|query(_table)?|getenv|current_setting|duckdb_\w+|pragma_\w+|"
    r"which_secret|load|install|import\w*|export\w*|checkpoint|force_checkpoint|set_\w+|enable_\w+|disable_\w+|"
    r"from_json_strict|json_execute_serialized_sql|system|shell|iceberg_\w+|delta_\w+|httpfs\w*|sqlite_\w+|"
    r"postgres_\w+|mysql_\w+|read|write\w*|copy\w*|attach|detach|getvariable|setvariable)$", re.IGNORECASE)


class QueryResult(BaseModel):
    sql: str
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = Field(default=False, description="more rows than the cap; only the first are kept")
    sources: list[str] = Field(default_factory=list, description="path:line of the rows the result came from")
    evidence: list[str] = Field(default_factory=list, description="'path:line: col=value, …' for a person")
    unmatched: list[str] = Field(default_factory=list, description="text filters no row meets, with near values")
    seconds: float = 0.0


def check_query(sql: str, allowed: set[str]) -> exp.Query:
    """The parsed query when it is one read-only SELECT over `allowed` tables; else `QueryRefused`."""
    text = sql.strip().rstrip(";").strip()
    if not text:
        raise QueryRefused("the query is empty; write one SELECT")
    try:
        statements = [s for s in sqlglot.parse(text, read="duckdb") if s is not None]
    except sqlglot.errors.SqlglotError as exc:
        raise QueryRefused(f"the query does not parse: {str(exc).splitlines()[0][:200]}") from exc
    if len(statements) != 1:
        raise QueryRefused(f"write exactly one statement, not {len(statements)}")
    query = statements[0]
    if not isinstance(query, exp.Query):
        raise QueryRefused(f"only a SELECT is allowed, not {query.key.upper()}")
    ctes = {cte.alias_or_name.lower() for cte in query.find_all(exp.CTE)}
    for node in query.walk():
        if isinstance(node, (exp.DML, exp.DDL, exp.Command, exp.Pragma, exp.Set, exp.Copy, exp.Attach, exp.Detach,
                             exp.Use, exp.Transaction, exp.Into, exp.Describe)):
            raise QueryRefused(f"only a SELECT is allowed; {node.key.upper()} is not")
        if isinstance(node, exp.Table):
            if not isinstance(node.this, exp.Identifier):
                raise QueryRefused(f"table functions are not allowed ({node.sql('duckdb')[:80]}); "
                                   f"use the tables shown: {', '.join(sorted(allowed))}")
            if node.args.get("db") or node.args.get("catalog"):
                raise QueryRefused(f"use the table names as shown, without a schema ({node.sql('duckdb')[:80]})")
            if node.name.lower() not in allowed and node.name.lower() not in ctes:
                raise QueryRefused(f"there is no table {node.name!r}; the tables are: {', '.join(sorted(allowed))}")
        if isinstance(node, exp.Func):
            name = node.sql_name() if not isinstance(node, exp.Anonymous) else str(node.this)
            if _FORBIDDEN_FUNCTION.match(name.lower()):
                raise QueryRefused(f"the function {name}() is not allowed in a query")
    return query


def run_query(catalog: TableCatalog, sql: str, tables: list[str], *, row_cap: int = ROW_CAP,
              time_limit_s: float = TIME_LIMIT_S) -> QueryResult:
    """Check `sql`, run it over `tables` (names in `catalog`) and return its rows and their sources."""
    import time

    started = time.monotonic()
    allowed = {t.lower() for t in tables}
    query = _mended(check_query(sql, allowed), catalog, tables)
    with _sandbox(catalog, tables) as db:
        wrapped = f"SELECT * FROM ({query.sql('duckdb')}) AS result LIMIT {row_cap + 1}"
        columns, rows = _execute(db, wrapped, time_limit_s)
        widened = _widened(db, query, catalog, tables, time_limit_s) if not rows else None
        if widened is not None:  # `name = 'vpn'` met no row; the rows naming vpn as a word answer it
            query = widened
            columns, rows = _execute(db, f"SELECT * FROM ({query.sql('duckdb')}) AS result LIMIT {row_cap + 1}",
                                     time_limit_s)
        truncated = len(rows) > row_cap
        rows = rows[:row_cap]
        sources, evidence = _trace(db, query, catalog, tables, time_limit_s)
        nothing = not rows or all(v in (None, 0) for row in rows for v in row)
        unmatched = _unmatched(db, query, catalog, tables, time_limit_s) if nothing else []
    return QueryResult(sql=query.sql("duckdb", pretty=True), columns=columns, rows=[[_plain(v) for v in r] for r in rows],
                       truncated=truncated, sources=sources, evidence=evidence, unmatched=unmatched,
                       seconds=time.monotonic() - started)


def _unmatched(db: duckdb.DuckDBPyConnection, query: exp.Query, catalog: TableCatalog, tables: list[str],
               time_limit_s: float) -> list[str]:
    """For a query that found nothing: each text filter (`col = 'x'`, `col ILIKE '%x%'`) no row
    meets, with the values of that column that share a word with it, so the one retry can use a
    value that exists ("no message is like '%nightly dump%'; messages with 'dump': 'db-dump ok: …'")."""
    text_columns = {c.name.lower(): n for n in tables for c in catalog.tables[n].columns if c.type == "VARCHAR"}
    notes: list[str] = []
    for node in query.find_all(exp.EQ, exp.In):
        # a join on text: `people.name = rota.person` meets no row when one side writes "Ana Lopez"
        # and the other "Ana"; show a few values of each side
        left = node.this
        right = node.expression if isinstance(node, exp.EQ) else (node.args.get("query") or None)
        right_column = right if isinstance(right, exp.Column) else \
            next(iter(right.find_all(exp.Column)), None) if right is not None and right.find(exp.Select) else None
        if not isinstance(left, exp.Column) or right_column is None:
            continue
        sides = []
        for column in (left, right_column):
            table = text_columns.get(column.name.lower())
            if table is None:
                break
            _, found = _execute(db, f"SELECT DISTINCT {column.name} FROM {table} LIMIT 4", time_limit_s)
            sides.append(f"{table}.{column.name}: " + ", ".join(f"'{str(r[0])[:40]}'" for r in found))
        if len(sides) == 2:
            notes.append("the two sides of " + node.sql("duckdb")[:80] + " hold values written differently? "
                         + "; ".join(sides) + " (ILIKE '%' || a || '%' matches a part)")
    notes += _no_such_date(db, query, catalog, tables, time_limit_s)
    for node in query.find_all(exp.EQ, exp.Like, exp.ILike):
        column, literal = node.this, node.expression
        if not isinstance(column, exp.Column) or not isinstance(literal, exp.Literal) or not literal.is_string:
            continue
        table = text_columns.get(column.name.lower())
        if table is None:
            continue
        name, value = column.name, literal.this
        pattern = value if isinstance(node, (exp.Like, exp.ILike)) else value.replace("%", "")
        try:
            _, hit = _execute(db, f"SELECT count(*) FROM {table} WHERE {name} ILIKE $$" + pattern.replace("$", "")
                              + "$$", time_limit_s)
        except QueryFailed:
            continue
        if hit and hit[0][0]:
            continue
        near: list[str] = []
        for word in sorted(set(re.findall(r"[^\W_]{3,}", value.lower())), key=len, reverse=True)[:4]:
            _, found = _execute(db, f"SELECT DISTINCT {name} FROM {table} WHERE {name} ILIKE '%{word}%' LIMIT 4",
                                time_limit_s)
            near += [str(r[0])[:80] for r in found if str(r[0])[:80] not in near]
        if not near:
            _, common = _execute(db, f"SELECT {name}, count(*) AS n FROM {table} GROUP BY 1 ORDER BY n DESC LIMIT 6",
                                 time_limit_s)
            near = [str(r[0])[:80] for r in common]
        notes.append(f"no {name} in {table} is {'like' if pattern != value or '%' in value else ''} '{value}'; "
                     f"values it has: " + "; ".join(f"'{v}'" for v in near[:6]))
    return notes


def _widened(db: duckdb.DuckDBPyConnection, query: exp.Query, catalog: TableCatalog, tables: list[str],
              time_limit_s: float) -> exp.Query | None:
    """For a query that found no row: each `text_column = 'x'` that no row meets, but where some
    values hold x as a whole word ('vpn' in 'vpn.example.org', 'Ana' in 'Ana Lopez'), becomes that
    word match. The query shown is the widened one; None when nothing was widened."""
    text_columns = {c.name.lower(): n for n in tables for c in catalog.tables[n].columns if c.type == "VARCHAR"}
    widened = query.copy()
    changed = False
    for node in list(widened.find_all(exp.EQ)):
        column, literal = node.this, node.expression
        if not (isinstance(column, exp.Column) and isinstance(literal, exp.Literal) and literal.is_string):
            continue
        table = text_columns.get(column.name.lower())
        word = literal.this.strip()
        if table is None or not re.fullmatch(r"[\w.@+-]{2,60}", word):
            continue
        pattern = r"(^|[^A-Za-z0-9])" + re.escape(word).replace("'", "''") + r"($|[^A-Za-z0-9])"
        try:
            _, exact = _execute(db, f"SELECT count(*) FROM {table} WHERE {column.name} = $${word}$$", time_limit_s)
            _, near = _execute(db, f"SELECT count(*) FROM {table} WHERE regexp_matches({column.name}, "
                                   f"'{pattern}', 'i')", time_limit_s)
        except QueryFailed:
            continue
        if exact[0][0] == 0 and near[0][0] > 0:
            node.replace(exp.func("regexp_matches", column.copy(), exp.Literal.string(pattern), exp.Literal.string("i")))
            changed = True
    return widened if changed else None


def _no_such_date(db: duckdb.DuckDBPyConnection, query: exp.Query, catalog: TableCatalog, tables: list[str],
                  time_limit_s: float) -> list[str]:
    """`period_start = '2031-04-09'` meets no row when the rows hold the Monday of each week: the
    dates on either side of it, so the retry can use a range."""
    dated = {c.name.lower(): n for n in tables for c in catalog.tables[n].columns if c.type in ("DATE", "TIMESTAMP")}
    notes = []
    for node in query.find_all(exp.EQ):
        column, value = node.this, node.expression
        table = dated.get(column.name.lower()) if isinstance(column, exp.Column) else None
        if table is None or value.find(exp.Column) is not None:
            continue
        when = value.sql("duckdb")
        try:
            _, found = _execute(db, f"SELECT (SELECT max({column.name}) FROM {table} WHERE {column.name} < {when}), "
                                    f"(SELECT min({column.name}) FROM {table} WHERE {column.name} > {when}), "
                                    f"(SELECT count(*) FROM {table} WHERE {column.name} = {when})", time_limit_s)
        except QueryFailed:
            continue
        before, after, hits = found[0]
        if not hits and (before or after):
            notes.append(f"no {column.name} in {table} is {when}; the nearest are {_plain(before)} (before) and "
                         f"{_plain(after)} (after): a range (BETWEEN, or <= and >) meets the row that covers it")
    return notes


def _mended(query: exp.Query, catalog: TableCatalog, tables: list[str]) -> exp.Query:
    """What a small model gets wrong in a way only one reading can fix, fixed before it runs (the
    SQL shown is the fixed one):

    - LIKE is ILIKE: a question's words carry no case;
    - a text operator (LIKE, ILIKE) on a typed column compares the column's text: it writes
      `day LIKE '2031-04-%'` for a DATE, which DuckDB refuses;
    - `col = 'value'` where `col` is a category column that never holds that value, but exactly
      one other category column of the table does (`detail = 'failed'` when `level` holds
      'FAILED'), or the column holds it in another case or inflection: the filter meant that value."""
    typed = {c.name.lower() for n in tables for c in catalog.tables[n].columns if c.type != "VARCHAR"}
    for node in list(query.find_all(exp.Like)):  # a person's words carry no case: LIKE 'VPN%' means 'vpn.…' too
        node.replace(exp.ILike(this=node.this.copy(), expression=node.expression.copy()))
    for node in list(query.find_all(exp.ILike)):
        left = node.this
        if isinstance(left, exp.Column) and left.name.lower() in typed:
            left.replace(exp.cast(left.copy(), "VARCHAR"))
    for node in list(query.find_all(exp.EQ, exp.NEQ)):
        column, literal = node.this, node.expression
        if isinstance(column, exp.Column) and isinstance(literal, exp.Literal) and literal.is_string:
            _relink(column, literal, catalog, tables)
    return query


def _relink(column: exp.Column, literal: exp.Literal, catalog: TableCatalog, tables: list[str]) -> None:
    owners = [catalog.tables[n] for n in tables if (not column.table or column.table.lower() == n.lower())
              and any(c.name.lower() == column.name.lower() for c in catalog.tables[n].columns)]
    if len(owners) != 1:
        return
    card = owners[0]
    categories = {c.name: c.values for c in card.columns if c.type == "VARCHAR" and c.values}
    own = categories.get(next(c.name for c in card.columns if c.name.lower() == column.name.lower()))
    if own is None or literal.this in own:
        return
    wanted = _word_form(literal.this)
    same = [v for v in own if _word_form(v) == wanted]
    if len(same) == 1:
        literal.replace(exp.Literal.string(same[0]))
        return
    elsewhere = [(name, v) for name, values in categories.items() for v in values
                 if name.lower() != column.name.lower() and _word_form(v) == wanted]
    if len(elsewhere) == 1:
        name, value = elsewhere[0]
        column.set("this", exp.to_identifier(name))
        literal.replace(exp.Literal.string(value))


def _word_form(value: str) -> str:
    """'FAILED', 'failed', 'fails' and 'fail' are one word here."""
    word = value.strip().lower()
    for ending in ("ed", "es", "s"):
        if len(word) > len(ending) + 2 and word.endswith(ending):
            return word[: -len(ending)]
    return word


class _sandbox:
    """An in-memory DuckDB holding only `tables`, then closed to the outside world."""

    def __init__(self, catalog: TableCatalog, tables: list[str]) -> None:
        self.catalog, self.tables = catalog, tables

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        self.db = duckdb.connect(":memory:", config={"threads": 1, "memory_limit": MEMORY_LIMIT,
                                                     "autoinstall_known_extensions": False,
                                                     "autoload_known_extensions": False})
        for name in self.tables:
            paths = ", ".join("'" + str(p).replace("'", "''") + "'" for p in self.catalog.parquet(name))
            self.db.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet([{paths}], union_by_name = true)")
        self.db.execute("SET enable_external_access = false")
        self.db.execute("SET lock_configuration = true")
        return self.db

    def __exit__(self, *exc: object) -> None:
        self.db.close()


def _execute(db: duckdb.DuckDBPyConnection, sql: str, time_limit_s: float) -> tuple[list[str], list[tuple]]:
    timer = threading.Timer(time_limit_s, db.interrupt)
    timer.start()
    try:
        cursor = db.execute(sql)
        columns = [d[0] for d in cursor.description or []]
        return columns, cursor.fetchall()
    except duckdb.InterruptException as exc:
        raise QueryFailed(f"the query ran longer than {time_limit_s:.0f} s and was stopped") from exc
    except duckdb.OutOfMemoryException as exc:
        raise QueryFailed(f"the query needed more than {MEMORY_LIMIT} of memory and was stopped") from exc
    except duckdb.Error as exc:
        raise QueryFailed(str(exc).splitlines()[0][:300]) from exc
    finally:
        timer.cancel()


def _trace(db: duckdb.DuckDBPyConnection, query: exp.Query, catalog: TableCatalog, tables: list[str],
           time_limit_s: float) -> tuple[list[str], list[str]]:
    """The source rows behind the result: for a plain SELECT, its own rows; for an aggregate,
    the rows its FROM/JOIN/WHERE kept. Best effort: a query too complex to trace gives none."""
    select = query if isinstance(query, exp.Select) else None
    if select is None or not (select.args.get("from_") or select.args.get("from")):
        return [], []
    sources = [t for t in select.find_all(exp.Table) if t.name.lower() in {n.lower() for n in tables}
               and t.find_ancestor(exp.Select) is select]
    if not sources:
        return [], []
    traced = select.copy()
    aggregated = bool(select.args.get("group")) or any(
        isinstance(node, exp.AggFunc) and node.find_ancestor(exp.Select) is select for node in select.find_all(exp.AggFunc))
    if aggregated or select.args.get("distinct"):
        for part in ("group", "having", "order", "limit", "offset", "distinct", "qualify"):
            traced.set(part, None)
    columns = []
    for table in sources:
        ref = table.alias_or_name
        card = catalog.tables[next(n for n in tables if n.lower() == table.name.lower())]
        shown = ", ".join(f"{c.name}=' || coalesce(CAST({ref}.{c.name} AS VARCHAR), '') || '"
                          for c in card.columns[:8])
        columns.append(exp.alias_(sqlglot.parse_one(f"{ref}.{SOURCE}", read="duckdb"), f"s_{len(columns)}"))
        columns.append(exp.alias_(sqlglot.parse_one(f"'{shown}'", read="duckdb"), f"e_{len(columns)}"))
    traced.set("expressions", columns)
    try:
        _, rows = _execute(db, f"SELECT * FROM ({traced.sql('duckdb')}) AS t LIMIT {EVIDENCE_CAP}", time_limit_s)
    except (QueryFailed, sqlglot.errors.SqlglotError):
        return [], []
    found_sources: list[str] = []
    evidence: list[str] = []
    for row in rows:
        for i in range(0, len(row), 2):
            if row[i] and row[i] not in found_sources:
                found_sources.append(row[i])
                evidence.append(f"{row[i]}: {row[i + 1]}")
    return found_sources, evidence


def _plain(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    return value
