"""Which tables a question is about: the query route's table choice, by words, before any model call.

A question's words, weighted by how rare they are among the tables, meet a table's name (most),
its columns and the categories a short column takes (a row's one-word name too), or whole words
in its cells; a calendar word or a year only says the table has dates. Measured in issue #25:
shown every table, the 1.5B picked the wrong one; shown a naive keyword pick, it did worse.
"""

from __future__ import annotations

import math
import re
from pathlib import PurePath

from pydantic import BaseModel, Field

from foreman.tools.tables.store import TableCard, TableCatalog
from foreman.tools.text import singular, stem, words

MAX_TABLES = 3
NEAR_TIE = 0.9  # a table scoring this share of the best one's score is shown too
SECOND_TABLE_GAIN = 0.4  # a further table must add this share of the first one's score in new words


class TableMatch(BaseModel):
    name: str
    score: float
    matched: list[str] = Field(default_factory=list, description="question words this table holds")
    in_schema: bool = Field(default=False, description="a word matched its name or columns, not only its cells")
    by_name: bool = Field(default=False, description="a word matched the table's own name")
    tied: bool = Field(default=False, description="shown for a near tie with a chosen table on the same words")


def _stems(text: str) -> set[str]:
    return {stem(w) for w in words(text)}


def pick_tables(question: str, catalog: TableCatalog, max_tables: int = MAX_TABLES) -> list[TableMatch]:
    """The tables `question` is about, best first; empty when none shares a meaningful word."""
    cards = catalog.visible()
    wanted = _stems(question) | {w.lower() for w in re.findall(r"[\w.-]+", question) if any(ch.isdigit() for ch in w)}
    if not cards or not wanted:
        return []
    # a year, like a month, says the table has dates; it names no table
    calendar = _CALENDAR_STEMS | {w for w in wanted if re.fullmatch(r"(19|20)\d{2}", w)}
    # where a word can meet a table, and what that is worth: its name, a column, a category a short
    # column takes ("active" in status) or a row's one-word name ("db02"), any word in its cells;
    # a calendar word ("November", "week") only says the table has dates, and counts least
    fields = {c.name: {
        3.0: _stems(f"{c.name} {PurePath(c.path).stem} {c.label}"),
        2.0: _stems(c.column_text()) | _stems(" ".join(v for col in c.columns for v in (col.values or [])))
        | set(c.keys),
        0.5: _time_words(c) and calendar} for c in cards}
    hits = {c.name: {weight: {w for w in wanted if _meets(w, found)
                              or (weight == 2.0 and _abbreviates(w, _short_names(c)))}
                     for weight, found in fields[c.name].items() if weight != 1.0}
            for c in cards}
    # a cell's words are open vocabulary: whole words only ("contracts" is not "controller")
    asked = {singular(w): stem(w) for w in words(question)}
    for c in cards:
        cells = {singular(t) for t in c.terms} | {singular(w) for w in words(str(PurePath(c.path).parent))}
        hits[c.name][1.0] = {stem_ for plain, stem_ in asked.items() if plain in cells and stem_ in wanted}
    df = {w: sum(any(w in found for found in hits[c.name].values()) for c in cards) for w in wanted}
    idf = {w: math.log(1 + len(cards) / df[w]) for w in wanted if df[w]}

    def weights(card: TableCard) -> dict[str, float]:
        best: dict[str, float] = {}
        for weight, found in hits[card.name].items():
            for w in found:
                best[w] = max(best.get(w, 0.0), idf[w] * (0.5 if w in calendar else weight))
        return best

    scored = {c.name: weights(c) for c in cards}
    chosen: list[TableMatch] = []
    covered: set[str] = set()
    first = 0.0
    while len(chosen) < max_tables:
        gains = {name: sum(v for w, v in found.items() if w not in covered)
                 for name, found in scored.items() if name not in {m.name for m in chosen}}
        if not gains:
            break
        name, gain = max(gains.items(), key=lambda item: (item[1], -len(item[0])))
        if gain <= 0 or (chosen and gain < SECOND_TABLE_GAIN * first):
            break
        matched = sorted(w for w in scored[name] if w not in covered)
        named = (hits[name][3.0] | hits[name][2.0] - _stems(
            " ".join(v for col in catalog.tables[name].columns for v in (col.values or [])))) - calendar
        if chosen and not named:
            break  # a further table must be named by the question (its name or a column), not just hold a word
        chosen.append(TableMatch(name=name, score=round(gain, 3), matched=matched, in_schema=bool(named),
                                 by_name=bool(hits[name][3.0] - calendar)))
        covered |= set(scored[name]) - calendar  # dates do not answer the other table's part
        first = first or gain
    # a near tie on the same words: words cannot tell which, so the model is shown both
    for name, found in sorted(scored.items(), key=lambda item: -sum(item[1].values())):
        total = sum(found.values())
        if len(chosen) >= max_tables or not chosen or total < NEAR_TIE * chosen[0].score:
            break
        if name not in {m.name for m in chosen} and hits[name][3.0] | hits[name][2.0] - calendar:
            chosen.append(TableMatch(name=name, score=round(total, 3), matched=sorted(found), in_schema=True,
                                     by_name=bool(hits[name][3.0] - calendar), tied=True))
    return chosen


_CALENDAR = ("january february march april may june july august september october november december "
             "monday tuesday wednesday thursday friday saturday sunday day days week weeks month months year "
             "years date dates when daily weekly monthly nightly night nights morning evening")


_CALENDAR_STEMS = {stem(w) for w in _CALENDAR.split()}


def _time_words(card: TableCard) -> set[str]:
    """A table with a date or timestamp column answers to calendar words: "in November", "which days"."""
    if any(c.type in ("DATE", "TIMESTAMP") for c in card.columns):
        return {stem(w) for w in _CALENDAR.split()}
    return set()


def _meets(word: str, stems: set[str]) -> bool:
    """`word` is among `stems`, or they share all but their last letter, four at least ("hour" and
    "hourl(y)", "renew(ing)" and "renew(al)")."""
    if word in stems:
        return True
    return len(word) >= 4 and any(len(s) >= 4 and _shared(word, s) >= max(4, min(len(word), len(s)) - 1)
                                  for s in stems)


def _short_names(card: TableCard) -> set[str]:
    """Three-letter words of column names: the abbreviations people name columns with (mem, qty, amt)."""
    return {part for c in card.columns for part in c.name.split("_") if len(part) == 3 and part.isalpha()}


def _abbreviates(word: str, shorts: set[str]) -> bool:
    """A short column word starts the question's word: `mem_gb` for "memory", `qty` for "quantity"."""
    return len(word) >= 5 and any(word.startswith(s) for s in shorts)


def _shared(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n

