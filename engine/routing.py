"""Which way an objective goes: one grounded answer, or a plan. Pure Python, no model call.

Measured in issue #12: BM25 top-4 passages plus one direct chat call answered 7/12 (0.5B)
and 11/12 (1.5B) where the planner answered 0/12, in 3.7-8.4 s instead of 93 s. So a
question the passages can answer takes the fast path (`engine/answer.py`); objectives that
ask for actions, or for counting, totals, comparisons or date arithmetic, go to the planner,
which can give them a computed step: retrieval alone cannot count across files.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel

from foreman.engine.evidence import located, stem, words
from foreman.engine.grounding import Grounding
from foreman.tools.knowledge.search import Passage
from foreman.tools.knowledge.store import STOP_WORDS

_QUESTION_START = re.compile(
    r"^(what|which|when|where|who|whom|whose|why|how|is|are|was|were|do|does|did|can|could|should|has|have|"
    r"will|would|tell me|list|name|give me|show me|explain|describe|summari[sz]e)\b", re.IGNORECASE)
_ACTION = re.compile(
    r"\b(write|create|save|delete|remove|rename|send|e-?mail|notify|post|upload|fetch|download|run|execute|"
    r"install|deploy|restart|schedule|edit|update|fix|draft|publish)\b", re.IGNORECASE)
_REQUEST = re.compile(r"^(please\b|(can|could|would|will) you\b)", re.IGNORECASE)
_COMPUTED = re.compile(
    r"\b(how many|count|(?<!serial )(?<!phone )(?<!model )(?<!version )(?<!part )(?<!port )number of|total|sum|average|mean|median|percent(age)?|compare|comparison|more than|"
    r"less than|fewer|most|least|largest|smallest|oldest|newest|longest|shortest|difference|days? (until|since|"
    r"between|left)|how long ago|how old|per (host|month|day|week)|each|every one|all the)\b", re.IGNORECASE)


class Route(BaseModel):
    """What the objective needs: one grounded answer, or a plan (with why)."""

    kind: Literal["answer", "plan"]
    reason: str


def route(objective: str, grounding: Grounding) -> Route:
    """Whether one grounded call can answer `objective`. Cheap, deterministic, explainable.

    A question is answered from the passages unless it needs computing (counts, totals,
    comparisons, date arithmetic) or holds several questions; an action word counts only in
    a request ("Write ...", "Can you send ..."), not inside a question ("Which file failed to
    upload?")."""
    text = " ".join(objective.split())
    if not grounding.passages:
        return Route(kind="plan", reason="no passages found: the steps must look for themselves")
    computed = _COMPUTED.search(text)
    only_how_many = computed is not None and computed.group(0).lower() == "how many" \
        and len(_COMPUTED.findall(text)) == 1
    if only_how_many and grounding.count is not None:
        return Route(kind="answer", reason=f"a count Python computed: {grounding.count.count} rows of "
                                           f"{grounding.count.path} (engine/tables.py)")
    stated = stated_count(text, grounding.passages) if only_how_many else None
    if computed and not stated:
        return Route(kind="plan", reason=f"needs a computed step ({computed.group(0)!r})")
    action = _ACTION.search(text)
    request = _REQUEST.match(text)
    if request and action:
        return Route(kind="plan", reason=f"asks for an action ({action.group(0)!r})")
    if text.endswith("?") or _QUESTION_START.match(text):
        if text.count("?") > 1 or re.search(r"\?\s*\S", text):
            return Route(kind="plan", reason="several questions: several steps")
        if stated:
            return Route(kind="answer",
                         reason=f"a question the passages may answer in one step: the count is stated ({stated.location})")
        return Route(kind="answer", reason="a question the passages may answer in one step")
    if action:
        return Route(kind="plan", reason=f"asks for an action ({action.group(0)!r})")
    return Route(kind="plan", reason="not a question")


class StatedCount(BaseModel):
    """A count the notes state: where (`path:line`) and in which words ("23 devices")."""

    location: str
    phrase: str


_COUNT_ENDS = re.compile(r"^(are|is|was|were|do|does|did|may|can|could|will|would|should|have|has|had|run|runs|"
                         r"in|on|of|at|for|per|from|with|there|does|kept|left)$", re.IGNORECASE)
_NUMBER = re.compile(r"^\d[\d.,]*$")


def _singular(word: str) -> str:
    return stem(word[:-1] if word.endswith("s") and len(word) > 3 else word)


def stated_count(question: str, passages: list[Passage]) -> StatedCount | None:
    """Where a passage states the count a "how many" question asks for, and the words stating it.

    "How many reallocated sectors does disk sdc have?" is a lookup when a line says "sdc ... 8
    reallocated sectors"; "How many hosts are in the basement rack?" needs counting rows. A line
    states the count when a number stands at most two words before the counted noun, and the line
    also names something else the question asks about (sdc), so "A 32 GB VM takes 20 minutes"
    does not answer "How many VMs run on pve2?"."""
    after = re.split(r"\bhow many\b", question, maxsplit=1, flags=re.IGNORECASE)[-1]
    counted: list[str] = []
    for word in re.findall(r"[^\W_]+", after.lower()):
        if _COUNT_ENDS.match(word) or len(counted) == 3:
            break
        if word not in STOP_WORDS:
            counted.append(_singular(word))
    others = {_singular(w) for w in words(question)} - set(counted) - {"how", "many"}
    for passage in passages:
        context = {_singular(w) for w in words(f"{passage.path} {passage.heading}")}
        for offset, line in enumerate(passage.text.splitlines()):
            tokens = list(re.finditer(r"[^\s,;:()]+", line))
            lowered = [t.group(0).lower().strip(".") for t in tokens]
            pairs = [(i, j) for i, word in enumerate(lowered) if _NUMBER.match(word)
                     for j in range(i + 1, min(i + 4, len(tokens))) if _singular(lowered[j]) in counted]
            if not pairs:
                continue
            # from the first number to the last counted noun: "23 devices", "7 daily, 4 weekly and 12 monthly"
            phrase = line[tokens[pairs[0][0]].start():tokens[max(j for _, j in pairs)].end()].rstrip(".")
            if not others or others & ({_singular(w) for w in words(line)} | context):
                return StatedCount(location=located(passage, offset), phrase=phrase)
    return None
