"""Which way an objective goes: lookup, query, code or plan. Decided here, once, from typed signals.

- **lookup**: a question the passages can answer: one grounded call (`engine/answer.py`).
  Measured in issue #12: 11/12 right on the 1.5B in seconds, where the planner took 93 s.
- **query**: the question needs a computed step (a count, a total, a filter, a comparison, the
  first or last of something) or asks for a file written from the data, and a table of the
  workspace matches it (`engine/query.py`): the model writes one SELECT; Python checks and runs it.
  Measured in issue #25: a model adding up passages in its head was wrong; one query was right
  for most such tasks.
- **code**: the person asks for Python by name ("… in Python") and a table matches
  (`engine/compute.py`): the model writes one script over the tables as CSV; the sandbox runs it.
- **chain**: the question needs one fact before another ("who was on duty the day the pump
  failed?", "the email of whoever runs the Leeds office"): the model splits it in two, and each
  half takes its own route (`engine/chain.py`). When it does not split, the usual route applies.
- **plan**: anything else: actions, several questions, nothing found. The planner writes steps.

The signals are generic words of asking (how many, total, which … more than, latest), a file
name after a writing verb, and the tables `pick_tables` matched; no rule names a question.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from foreman.engine.evidence import stated_count, time_span
from foreman.engine.grounding import Grounding
from foreman.engine.query import WriteRequest
from foreman.engine.table_choice import TableMatch, pick_tables

_QUESTION_START = re.compile(
    r"^(what|which|when|where|who|whom|whose|why|how|is|are|was|were|do|does|did|can|could|should|has|have|"
    r"will|would|tell me|list|name|give me|show me|explain|describe|summari[sz]e|find)\b", re.IGNORECASE)
_ACTION = re.compile(
    r"\b(write|create|save|delete|remove|rename|send|e-?mail|notify|post|upload|fetch|download|run|execute|"
    r"install|deploy|restart|schedule|edit|update|fix|draft|publish)\b", re.IGNORECASE)
_REQUEST = re.compile(r"^(please\b|(can|could|would|will) you\b)", re.IGNORECASE)
# Asking for a computed step: an aggregate, a filter by a bound, an order, a span of time.
_COMPUTED = re.compile(
    r"\b(how many|how much|count|(?<=the |. a )number of|^number of|total|sum|add(s|ed)? up|altogether|combined|average|mean|median|"
    r"percent(age)?|more than|less than|fewer than|greater than|at least|at most|"
    r"exceed\w*|most|least|highest|lowest|largest|smallest|biggest|cheapest|(most )?expensive|oldest|newest|"
    r"latest|earliest|first|last|next|soonest|upcoming|longest|shortest|top \d+|difference|between|per|each|every|"
    r"all (the|our|of)|days? (until|since|left)|how long|how often|ranked|sorted)\b|[<>]=?\s*\d"
    # a bound is a number: "over 90%", "under €50" (not "under warranty", "over the weekend")
    r"|\b(over|under|above|below|exceeding)\s+[€$£]?\d"
    # a bound in time is a date: "before April 2027", "after the end of 2026" (not "after a power outage")
    r"|\b(before|after|until|by)\s+(the (end|start|beginning|middle) of\s+(the\s+)?)?(\d|today|tomorrow|yesterday|"
    r"next|last|this|week|month|quarter|year|(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\b|(mon|tues|wednes|thurs|fri|satur|sun)day)"
    # a set of rows: "which servers …", "which of the certificates …" (a plural asks for every match)
    r"|\bwhich (of (the|our|my|these|those) )?([\w-]+ )?[\w-]+(?<!ss)(?<!us)(?<!is)s(?= (are|were|have|had|do|did|"
    r"will|would|can|could|should|must|need|use|run|come|expire|cost|go|take|of|in|on|at|with|from|for|that|"
    r"which|whose|we|our|i|you|still|not|already|and|or)\b)"
    # an amount over a period: "what did the shop earn in March", "what we spent last month"
    r"|\b(make|made|earn(ed|s)?|spen[dt]|br(ing|ought) in|take|took|takings|pa(y|id)|sold|sell)\b.*\b(in|during|over|"
    r"across|for|last|this) (the )?(january|february|march|april|may|june|july|august|september|october|november|"
    r"december|week|month|quarter|year|\d{4})", re.IGNORECASE)
_WRITE_VERB = re.compile(r"\b(write|save|create|export|put|make|produce|generate|draft|store|dump|output|prepare|"
                         r"compose|record)\b", re.IGNORECASE)
_FILE_NAME = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*[\w-]+\.(?:md|markdown|txt|csv|tsv|json))\b", re.IGNORECASE)
# asking for a reason or a way, not a fact: the notes explain it, no join computes it
_EXPLAIN = re.compile(r"^(why|how (do|does|did|can|could|should|would|to)|explain|describe|summari[sz]e)\b", re.IGNORECASE)
_CODE = re.compile(r"\b(python|script|code)\b", re.IGNORECASE)
# a fact that depends on another: "the week the X expires", "whoever …", "the server that failed …"
_BRIDGE = re.compile(
    r"\b(whoever|whichever|whatever)\b"
    r"|\bthe (day|date|week|month|year|night|morning|evening|time|shift)\s+(that|when|of the|on which|in which|"
    r"(the|our|my|their|its|his|her)\b(?! (day|week|month|year)\b))"
    r"|\b(the|a|our|my)\s+[\w-]+\s+(who|that|which|whose)\s+(?!(is|are|was|were|has|have|do|does)\b)[\w-]+",
    re.IGNORECASE)


class Route(BaseModel):
    """What the objective needs, with why: the lookup, the query (its tables, a file to write) or a plan."""

    kind: Literal["lookup", "query", "code", "chain", "plan"]
    reason: str
    tables: list[TableMatch] = Field(default_factory=list)
    write: WriteRequest | None = None
    rows_required: bool = Field(default=False, description="no rows is no answer (a join), not 'none match' (a filter)")


def write_request(objective: str) -> WriteRequest | None:
    """The file an objective asks to be written ("Save low-ink.csv with …"), if any."""
    verb = _WRITE_VERB.search(objective)
    found = _FILE_NAME.search(objective[verb.start():]) if verb else None
    return WriteRequest(path=found.group(1)) if found else None


def route(objective: str, grounding: Grounding, *, chain: bool = True) -> Route:
    """Lookup, query, code, chain or plan for `objective`, given what grounding found. Cheap,
    deterministic, explained. `chain=False` for a half of a chained question (never split twice),
    and for a question that did not split."""
    text = " ".join(objective.split())
    several = text.count("?") > 1  # "What do X cost? Just the licences." is one question, made clearer
    write = write_request(text)
    tables = pick_tables(text, grounding.tables) if grounding.tables is not None else []
    # a table the question names by its name or a column, or by two words of its cells
    matched = [t for t in tables if t.in_schema or len(t.matched) >= 2]
    computed = _COMPUTED.search(text)
    if _CODE.search(text) and matched and write is None and not several:
        return Route(kind="code", reason=f"asks for Python over {_names(matched)}", tables=matched)
    if _CODE.search(text) and _ACTION.search(text):
        return Route(kind="plan", reason="asks for code to be run: a step with the code tool")
    if write is not None and matched and not several:
        return Route(kind="query", reason=f"writes {write.path} from the rows of {_names(matched)}",
                     tables=matched, write=write)
    question = text.endswith("?") or _QUESTION_START.match(text) is not None
    bridge = _BRIDGE.search(text) if chain and question and write is None and not several else None
    if bridge and (grounding.passages or matched) and not _EXPLAIN.match(text):
        return Route(kind="chain", reason=f"one fact depends on another ({bridge.group(0)!r})", tables=matched)
    span = time_span(text, grounding.passages) if computed and write is None else None
    stated = stated_count(text, _prose(grounding)) \
        if computed and computed.group(0).lower() == "how many" and span is None else None
    if computed and matched and not several and stated is None and span is None:
        return Route(kind="query", reason=f"needs a computed step ({computed.group(0)!r}) over {_names(matched)}",
                     tables=matched)
    # a join: two tables each named by the question (by name, or by two of its columns or categories)
    named = [t for t in matched if t.in_schema and (t.by_name or len(t.matched) >= 2) and not t.tied]
    if len(named) >= 2 and question and not several and span is None and not _EXPLAIN.match(text):
        return Route(kind="query", reason=f"joins facts of {_names(named)}: each is named by the question",
                     tables=named, rows_required=True)
    if not grounding.passages:
        return Route(kind="plan", reason="no passages or tables found: the steps must look for themselves")
    action = _ACTION.search(text)
    if _REQUEST.match(text) and action:
        return Route(kind="plan", reason=f"asks for an action ({action.group(0)!r})")
    if question:
        if several:
            return Route(kind="plan", reason="several questions: several steps")
        why = f": the count is stated ({stated.location})" if stated else \
            f": the notes state when it began and ended ({span.split(': from')[0]})" if span else \
            f" (no table matches {computed.group(0)!r})" if computed else ""
        return Route(kind="lookup", reason=f"a question the passages may answer in one step{why}")
    if action:
        return Route(kind="plan", reason=f"asks for an action ({action.group(0)!r})")
    return Route(kind="plan", reason="not a question")


def _prose(grounding: Grounding) -> list:
    """The passages from files that are not tables: a count a log line or a row holds ("1 failed")
    is a cell to count over, not the count a note states."""
    catalog = grounding.tables
    if catalog is None:
        return grounding.passages
    tabled = {path for path, entry in catalog.files.items() if entry.tables}
    return [p for p in grounding.passages if p.path not in tabled]


def _names(tables: list[TableMatch]) -> str:
    return ", ".join(t.name for t in tables)
