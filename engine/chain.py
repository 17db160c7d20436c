"""Two facts chained: a question whose answer needs another fact first ("who was on duty the
day the pump failed?") is two questions, each answered the usual way.

The model does the one thing Python cannot: it splits the question, in one short call, into the
fact needed first and the rest with `[FIRST]` where that fact goes. Python does the mechanics:
it finds the passages and tables for the first question, answers it by its own route (a query or
a lookup), takes the value out of that answer, puts it into the second question, and answers that
the same way. Measured in issue #25: given both files and the whole question, the 1.5B answered
from a passage that happened to name the same person; asked one fact at a time it has one
thing to find each time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from foreman.engine.answer import GroundedAnswer, answer_from_passages
from foreman.engine.grounding import Grounding
from foreman.engine.plan import Plan, SubTask
from foreman.engine.query import QueryAnswer, answer_with_query
from foreman.engine.routing import route
from foreman.engine.table_choice import pick_tables
from foreman.errors import QueryFailed
from foreman.tools.text import STOP_WORDS, stem

SPLIT_MAX_TOKENS = 120
MARK = "[FIRST]"
SPLIT_SYSTEM = (
    "Some questions can only be answered after another fact is found first. Split such a question into "
    f"FIRST: the question for the fact needed first, and THEN: the rest of the question with {MARK} where that "
    "fact goes. If the question needs no other fact first, reply NONE."
)
# Invented examples, on no one's data: the shape of a split, not its content.
_EXAMPLES = [
    ("What is the email address of the person who runs the Leeds office?",
     f"FIRST: Who runs the Leeds office?\nTHEN: What is the email address of {MARK}?"),
    ("How many parcels were shipped on the day the warehouse roof leaked?",
     f"FIRST: On which date did the warehouse roof leak?\nTHEN: How many parcels were shipped on {MARK}?"),
    ("Which vendor supplies the printer that broke most often?",
     f"FIRST: Which printer broke most often?\nTHEN: Which vendor supplies {MARK}?"),
    ("What is the opening time of the Leeds office?", "NONE"),
]
_LINE = re.compile(r"^\s*(FIRST|THEN)\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


class Hop(BaseModel):
    """One of the two questions, how it went and what it found."""

    question: str
    route: str
    answer: str
    value: str = Field(description="what the next question is given: the answer's own words, not the question's")
    sources: list[str] = Field(default_factory=list)
    sql: str = ""
    calls: int = 0
    tokens: int = 0


class ChainAnswer(BaseModel):
    """A chained question's result: the final answer, and each hop with its evidence."""

    question: str
    hops: list[Hop]
    calls: int = 0
    tokens: int = 0
    seconds: float = 0.0

    @property
    def answer(self) -> str:
        return self.hops[-1].answer

    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(s for hop in self.hops for s in hop.sources))

    @property
    def text(self) -> str:
        """The answer, then how it was found: each question, its answer and what it rests on."""
        steps = []
        for i, hop in enumerate(self.hops, start=1):
            rest = f" (computed with: {' '.join(hop.sql.split())})" if hop.sql else ""
            steps.append(f"{i}. {hop.question} → {hop.value}{rest}"
                         + (f"\n   from {', '.join(hop.sources[:6])}" if hop.sources else ""))
        return f"{self.answer}\n\nFound in two steps:\n" + "\n".join(steps)


def split_question(question: str, model: BaseChatModel) -> tuple[tuple[str, str] | None, int]:
    """(first, then) with `MARK` in `then`, or None when the model sees one fact only; and the tokens used."""
    messages: list[Any] = [SystemMessage(content=SPLIT_SYSTEM)]
    for asked, split in _EXAMPLES:
        messages += [HumanMessage(content=asked), AIMessage(content=split)]
    messages.append(HumanMessage(content=" ".join(question.split())))
    reply = model.invoke(messages, max_tokens=SPLIT_MAX_TOKENS, temperature=0.0)
    text = reply.content if isinstance(reply.content, str) else str(reply.content)
    tokens = int((getattr(reply, "usage_metadata", None) or {}).get("total_tokens", 0))
    parts = {m.group(1).upper(): m.group(2) for m in _LINE.finditer(text)}
    first, then = parts.get("FIRST", ""), parts.get("THEN", "")
    if not first or MARK not in then or MARK in first or _same(first, question):
        return None, tokens
    return (first, then), tokens


def _same(a: str, b: str) -> bool:
    return " ".join(a.lower().split()).rstrip("?") == " ".join(b.lower().split()).rstrip("?")


def new_words(answer: str, question: str) -> str:
    """The part of `answer` the question did not say: the found value. "The pump's guarantee
    ends on 2031-04-09." for "When does the pump's guarantee end?" is "2031-04-09". Names,
    dates and numbers win over other new words ("Priya Shah" of "Priya Shah manages it")."""
    asked = {stem(w) for w in re.findall(r"[\w'’-]+", question.lower())}
    runs: list[list[str]] = [[]]
    for token in re.findall(r"[^\s,;]+", answer):
        clean = token.strip(".:!?()\"'’")
        core = re.sub(r"['’]s$", "", clean.lower())
        if not core or core in STOP_WORDS or stem(core) in asked or core in asked:
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append(clean)
    kind = _ANSWER_KIND.get(next((w for w in re.findall(r"[a-z]+", question.lower()) if w in _ANSWER_KIND), ""))
    for pattern in ([kind] if kind is not None else []) + [_ENTITY]:
        picked = [[t for t in run if pattern.match(t)] for run in runs]
        chosen = [run for run in picked if run]
        if chosen:
            return ", ".join(" ".join(run) for run in chosen)
    return ", ".join(" ".join(run) for run in runs if run) or answer


_ENTITY = re.compile(r"^([A-Z]|[€$£+]?\d)")
_NAME = re.compile(r"^[A-Z][^\d]*$")
_WHEN = re.compile(r"^(\d{4}-\d{2}-\d{2}|\d{1,2}(st|nd|rd|th)?|\d{4}|January|February|March|April|May|June|July|August|"
                   r"September|October|November|December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|"
                   r"Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)$")
_AMOUNT = re.compile(r"^[€$£+-]?\d")
# what the question word asks for: a name, a date, an amount (the first such word in the question)
_ANSWER_KIND = {"who": _NAME, "whom": _NAME, "whose": _NAME, "when": _WHEN, "date": _WHEN, "day": _WHEN,
                "week": _WHEN, "month": _WHEN, "year": _WHEN, "many": _AMOUNT, "much": _AMOUNT}


def hop_value(answered: QueryAnswer | GroundedAnswer, question: str) -> str:
    """What a hop hands on: a query's value(s) as Python rendered them; a lookup's new words, a
    date written out ("Saturday 21 November 2026") as ISO, which a query compares directly."""
    if isinstance(answered, QueryAnswer):
        if answered.rows and len(answered.rows) <= 3:
            return "; ".join(", ".join(str(v) for v in row if v is not None) for row in answered.rows)
        return answered.answer
    value = new_words(answered.answer, question)
    return iso_date(value) or value


_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december"]
_DAY_MONTH_YEAR = re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)?\s+([A-Za-z]{3,9})\.?,?\s+(\d{4})\b")
_MONTH_DAY_YEAR = re.compile(r"\b([A-Za-z]{3,9})\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})\b")


def iso_date(text: str) -> str | None:
    """The one calendar date `text` writes out ("21 November 2026", "Nov 21, 2026"), as ISO."""
    import datetime as dt

    found = [(d, m, y) for d, m, y in _DAY_MONTH_YEAR.findall(text)] + \
        [(d, m, y) for m, d, y in _MONTH_DAY_YEAR.findall(text)]
    dates = set()
    for day, month, year in found:
        number = next((i for i, name in enumerate(_MONTHS, start=1) if name.startswith(month.lower()[:3])), None)
        try:
            dates.add(dt.date(int(year), number, int(day)).isoformat() if number else None)
        except ValueError:
            continue
    dates.discard(None)
    return dates.pop() if len(dates) == 1 else None


Ground = Callable[[str], Grounding]


def answer_hop(question: str, ground: Ground, model: BaseChatModel, style: str) -> Hop | None:
    """One question by its own route: a query when a table answers it, else the passages. None
    when it needs more than one step or nothing was found."""
    grounding = ground(question)
    decided = route(question, grounding, chain=False)
    answered: QueryAnswer | GroundedAnswer | None = None
    # a half names one fact: where a table the question names holds it, its row is the answer
    named = [t for t in pick_tables(question, grounding.tables) if t.in_schema] \
        if decided.kind == "lookup" and grounding.tables is not None else []
    if named:
        decided = decided.model_copy(update={"kind": "query", "tables": named, "rows_required": True})
    if decided.kind == "query" and decided.write is None and grounding.tables is not None:
        try:
            answered = answer_with_query(question, grounding.tables, model, tables=[t.name for t in decided.tables],
                                         rows_required=decided.rows_required)
        except QueryFailed:
            answered = None
        if answered is not None and not answered.rows:
            answered = None  # "no rows match" hands nothing on
    if answered is None and grounding.passages:
        answered = answer_from_passages(question, grounding, model, style=style)  # type: ignore[arg-type]
        decided = decided.model_copy(update={"kind": "lookup"})
    if answered is None:
        return None
    return Hop(question=question, route=decided.kind, answer=answered.answer, value=hop_value(answered, question),
               sources=answered.sources, sql=getattr(answered, "sql", ""), calls=answered.calls,
               tokens=answered.tokens)


def answer_chained(question: str, ground: Ground, model: BaseChatModel, *, style: str = "adaptive"
                   ) -> ChainAnswer | None:
    """The two hops, or None when the question is one fact, or a hop found nothing (the run then
    takes the question's usual route)."""
    started = time.monotonic()
    split, tokens = split_question(question, model)
    if split is None:
        return None
    first, then = split
    hop1 = answer_hop(first, ground, model, style)
    if hop1 is None or not hop1.value.strip():
        return None
    hop2 = answer_hop(then.replace(MARK, hop1.value), ground, model, style)
    if hop2 is None:
        return None
    return ChainAnswer(question=question, hops=[hop1, hop2], calls=1 + hop1.calls + hop2.calls,
                       tokens=tokens + hop1.tokens + hop2.tokens, seconds=time.monotonic() - started)


def chain_plan(objective: str, decided: Any, answered: ChainAnswer) -> Plan:
    """The one-step plan a chained run records: one "chain" step whose instructions are the hops."""
    hops = "; then ".join(f"({hop.route}) {hop.question}" for hop in answered.hops)
    step = SubTask(id="chain", title="Two facts chained", agent="generalist", retries=0,
                   instructions=f"Answer {hops}")
    return Plan(objective=objective, rationale=f"two facts chained: {decided.reason}", tasks=[step])
