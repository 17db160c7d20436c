"""The code route: a person asks for Python by name ("… in Python"), so Python code runs.

The same split as the query route (`engine/query.py`), for code: Python parses the workspace's
tables first and hands them to the code as CSV files (typed columns named on the card, three
rows shown), so the model writes a short script that reads clean data instead of parsing raw
files (measured in issue #25: free-form scripts over raw files were right 1 time in 12), loaded with
typed values by a small module Foreman writes beside them (`load("servers")`). One
call writes the script; `run_python` runs it in the sandbox, with the workspace and the tables
read-only; a failure (an exception, no output) goes back once with the error's last lines. The
script's output is the answer, shown with the script and the tables it read.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from foreman.engine.plan import Plan, SubTask
from foreman.engine.table_choice import pick_tables
from foreman.errors import QueryFailed
from foreman.tools.tables.export import LOADER
from foreman.tools.tables.store import TableCard, TableCatalog

CODE_MAX_TOKENS = 500
ANSWER_CHARS = 2_000
_PY_BLOCK = re.compile(r"```(?:python|py)?\s*(.*?)```", re.IGNORECASE | re.DOTALL)
_PY_TYPES = {"BIGINT": "int", "DOUBLE": "float", "DATE": "datetime.date", "TIMESTAMP": "datetime.datetime",
             "TIME": "datetime.time", "BOOLEAN": "bool", "VARCHAR": "str"}

SYSTEM = (
    "You write one short Python 3 script that answers the user's question from the tables given. "
    "Use only the standard library (statistics, datetime, collections). Load a table with the lines "
    "shown; each row is a dict whose values are already typed (int, float, datetime.date, str; None "
    "when empty). Print the answer, with the values it rests on, and nothing else. Reply with the "
    "script only, in a ```python block."
)


class CodeAnswer(BaseModel):
    question: str
    answer: str
    script: str
    tables: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    calls: int = 0
    tokens: int = 0
    seconds: float = 0.0
    isolation: str = ""

    @property
    def text(self) -> str:
        return (f"{self.answer}\n\nComputed by Foreman with Python (sandboxed: {self.isolation}):\n"
                f"```python\n{self.script}\n```\nFrom the tables: " + ", ".join(self.sources))


def card_as_file(card: TableCard) -> str:
    lines = [f"{card.name} = load({card.name!r})  # {card.rows} rows, from {card.path}", "  columns:"]
    for column in card.columns:
        note = f" in {column.unit}" if column.unit else ""
        values = f"; values: {', '.join(column.values)}" if column.values else ""
        lines.append(f"    {column.name}: {_PY_TYPES.get(column.type, 'text')}{note}{values}")
    if card.sample:
        lines.append("  first rows:")
        lines += ["    " + ", ".join(f"{k}={v}" for k, v in row.items()) for row in card.sample[:3]]
    return "\n".join(lines)


_EXAMPLE_TABLE = """orders = load('orders')  # 120 rows, from sales/orders.csv
  columns:
    day: datetime.date
    shop: str; values: north, south
    amount: float in EUR
    items: int
  first rows:
    day=2026-03-01, shop=north, amount=182.5, items=14"""
_EXAMPLE_QUESTION = "In Python: the March day with the most takings over both shops, and the average per item?"
_EXAMPLE_SCRIPT = """from collections import defaultdict
orders = load('orders')
march = [r for r in orders if r['day'] is not None and r['day'].month == 3]
by_day = defaultdict(float)
for r in march:
    by_day[r['day']] += r['amount'] or 0
best = max(by_day, key=by_day.get)
print(f"{best.isoformat()}: {by_day[best]:.2f} EUR")
items = sum(r['items'] or 0 for r in march)
print(f"average per item: {sum(r['amount'] or 0 for r in march) / items:.2f} EUR")"""


def _worked_example(start: str) -> list[Any]:
    """One question and its script on an invented table (no one's data): a filter by month, a
    total per group, a weighted average, the values printed with what they are."""
    return [HumanMessage(content=f"The tables:\n\n{_EXAMPLE_TABLE}\n\nQuestion: {_EXAMPLE_QUESTION}\n"
                                 f"The script, starting with:\n```python\n{start}\n```"),
            AIMessage(content=f"```python\n{start}\n{_EXAMPLE_SCRIPT}\n```")]


def extract_code(reply: str) -> str:
    found = _PY_BLOCK.search(reply)
    return (found.group(1) if found else reply).strip()


def answer_with_code(question: str, catalog: TableCatalog, model: BaseChatModel, run: Callable[..., dict], *,
                     tables_folder: str, tables: list[str] | None = None) -> CodeAnswer:
    """Answer `question` with one sandboxed script over the matching tables (one repair with the
    error). `run` is the guarded, audited run_python tool (which also sees the workspace, read-only,
    for a script that needs a raw file). Raises `QueryFailed` when no script printed an answer."""
    started = time.monotonic()
    names = tables or [m.name for m in pick_tables(question, catalog)]
    if not names:
        raise QueryFailed("no table in the workspace matches the question")
    files = "\n\n".join(card_as_file(catalog.tables[n]) for n in names)
    start = f"import sys\nsys.path.insert(0, {tables_folder!r})\nfrom {LOADER.removesuffix('.py')} import load"
    messages: list[Any] = [SystemMessage(content=SYSTEM), *_worked_example(start), HumanMessage(content=(
        f"The tables:\n\n{files}\n\nQuestion: {question}\n"
        f"The script, starting with:\n```python\n{start}\n```"))]
    errors: list[str] = []
    calls = tokens = 0
    for attempt in range(2):
        reply = model.invoke(messages, max_tokens=CODE_MAX_TOKENS, temperature=0.0)
        text = reply.content if isinstance(reply.content, str) else str(reply.content)
        calls, tokens = calls + 1, tokens + int((getattr(reply, "usage_metadata", None) or {}).get("total_tokens", 0))
        script = extract_code(text)
        result = run(source=script)
        output = str(result.get("stdout", "")).strip()
        if result.get("exit_code") == 0 and output:
            return CodeAnswer(question=question, answer=output[:ANSWER_CHARS], script=script, tables=names,
                              sources=[catalog.tables[n].path for n in names], errors=errors, calls=calls,
                              tokens=tokens, seconds=time.monotonic() - started,
                              isolation=str(result.get("isolation", "")).split(";")[0])
        problem = (str(result.get("stderr", "")).strip().splitlines() or ["it printed nothing"])[-3:]
        errors.append(" | ".join(problem))
        if attempt == 0:
            messages += [AIMessage(content=f"```python\n{script}\n```"),
                         HumanMessage(content="That script failed:\n" + "\n".join(problem)
                                              + "\nWrite the corrected script.")]
    raise QueryFailed("no script printed an answer: " + "; ".join(errors))


def code_plan(objective: str, decided: Any, answered: CodeAnswer) -> Plan:
    """The one-step plan a code-route run records: one "compute" step."""
    step = SubTask(id="compute", title="Compute it with Python", agent="generalist", retries=0,
                   instructions=f"Write one Python script over {', '.join(answered.tables)} that answers: {objective}")
    return Plan(objective=objective, rationale=f"code route: {decided.reason}", tasks=[step])
